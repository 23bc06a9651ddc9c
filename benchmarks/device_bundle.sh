#!/usr/bin/env bash
# Here, before a GPU run: what benchmarks/device.sh needs on the device machine, which has
# Python 3.12, JAX, NumPy, pandas, pyarrow, scipy, tqdm, psutil, PyYAML and h5py, but no
# network. Writes .device-bundle/ (git-ignored; copy it along): wheels/ with the pure-Python
# packages the suite adds (Hydra, OmegaConf, the ANTLR runtime; the versions uv.lock pins for
# the `modern` group) and data.tar.gz with the real MovieLens, LEAF EMNIST and Shakespeare
# files from $FEDRECON_BENCH_DATA (default ../shared/data), compressed to fit the 64 MiB that
# travels with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
B=.device-bundle
DATA=${FEDRECON_BENCH_DATA:-../shared/data}
UV=$(command -v uv 2>/dev/null || echo "$HOME/.local/bin/uv")
rm -rf "$B"
mkdir -p "$B/wheels"
pins=$("$UV" export --locked --no-default-groups --group modern --no-hashes \
       | grep -E '^(hydra-core|omegaconf|antlr4-python3-runtime)==' | sed 's/ *;.*//')
for pin in $pins; do
  case "$pin" in
    antlr4-python3-runtime==*)  # published as an sdist only: build its (pure-Python) wheel here
      python3 -m pip wheel -q --no-deps -w "$B/wheels" "$pin" ;;
    *)
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$B/wheels" "$pin" ;;
  esac
done
tar -C "$DATA" -czf "$B/data.tar.gz" ml-1m/ratings.csv femnist-leaf shakespeare
ls -la "$B/wheels" "$B/data.tar.gz"
du -sh "$B"
