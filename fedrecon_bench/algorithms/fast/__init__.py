"""The algorithms on the fast engine (engine=fast): JAX, all clients of a round at once.
Each file mirrors its engine=tff twin in fedrecon_bench/algorithms/ step for step."""
