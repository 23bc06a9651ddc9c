"""engine=fast draws the same random numbers on both supported JAX lines (0.4.31 in the
default environment, today's JAX in the `modern` one): the values below were drawn on
jax 0.4.31 and hold on 0.10 and 0.11 (fedrecon_bench/engines/fast/jax_compat.py)."""
import jax
import numpy as np

from fedrecon_bench.engines.fast import jax_compat  # noqa: F401  (as the engine imports it)
from tasks import init


def test_a_seed_draws_the_same_numbers_on_every_jax_line():
    np.testing.assert_array_equal(init.uniform(0, 1, (3,)), np.float32(
        [0.023395229130983353, -0.01194376964122057, -0.031548965722322464]))
    np.testing.assert_array_equal(init.glorot(2, 3, (2, 2)).ravel(), np.float32(
        [-0.28253495693206787, -0.5047633051872253, 0.469609797000885, 0.6489450931549072]))
    key = jax.random.PRNGKey(1)
    assert np.asarray(jax.random.bernoulli(key, 0.5, (8,))).astype(int).tolist() == [1, 0, 1, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(np.asarray(jax.random.normal(key, (2,))),
                                  np.float32([-0.11617039144039154, 2.2125062942504883]))


def test_keys_are_raw_uint32_pairs_that_split_alike():
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(7), 2))
    assert keys.dtype == np.uint32 and keys.tolist() == [[966301609, 989289821], [1948237315, 1058547403]]
