"""`python -m fedrecon_bench +task=<task> +algo=<algo> [overrides]`."""
import os
import sys

from fedrecon_bench.cli_args import normalize
from fedrecon_bench.sweep import split_flags
from fedrecon_bench.errors import UserError


def cli() -> None:
    args = sys.argv[1:]
    try:
        if any(a in ("--help", "-h") for a in args):
            from fedrecon_bench.cli_check import help_text

            print(help_text())
            sys.exit(0)
        argv = normalize(args)
        flags, overrides = split_flags(argv)
        multirun = bool({"-m", "--multirun"} & set(flags))
        if "--dry-run" in flags or (multirun and {"--cfg", "-c"} & set(flags)):
            from fedrecon_bench.cli_check import preview

            print(preview(overrides))  # the jobs, each checked; nothing runs
            sys.exit(0)
        if not {"--info", "-i", "--cfg", "-c"} & set(flags):
            from fedrecon_bench import cli_check

            cli_check.check(cli_check.first_job(overrides), values=not multirun)
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
