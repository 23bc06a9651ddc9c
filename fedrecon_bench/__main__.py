"""`python -m fedrecon_bench +task=<task> +algo=<algo> [overrides]`."""
import os
import sys

from fedrecon_bench.cli_args import normalize
from fedrecon_bench.errors import UserError


def cli() -> None:
    try:
        argv = normalize(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter
    # wandb leaves WANDB_SERVICE set in a process that used it; a run started from
    # such a process (a script, a test, a sweep driver) would attach to that
    # service and hang. Each run starts its own.
    os.environ.pop("WANDB_SERVICE", None)
    sys.argv = [sys.argv[0], *argv]
    from fedrecon_bench.app import main

    main()


if __name__ == "__main__":
    cli()
