"""One run dir, one experiment, one writer: what a launch may do with an existing run dir.

    lock <run_dir>/.lock                       (flock: the kernel drops it when the process dies)
        held by another process   -> refuse: its pid and host
    summary.json says completed:
        rounds <= its rounds      -> nothing to do (the line says why), if the config matches
        rounds >  its rounds      -> extend: continue from its final checkpoint
    summary.json says diverged (at a round <= rounds): nothing to do, as completed
    checkpoints, newest first, each read in full (checkpoint.read):
        an unreadable one         -> reported; the one before it is used
        none readable             -> refuse, or start again with restart_on_bad_checkpoint=true
    the checkpoint's config vs this launch's: a key outside MAY_DIFFER differs -> refuse
    rounds below the checkpoint's round                                         -> refuse
    once the data is loaded (begin): its population vs the checkpoint's          -> refuse
    then .hydra/ is written, and the rows, checkpoints and client store this launch will
    not continue from are dropped.

A refusal is one line (a `Refused` UserError) and leaves the run dir exactly as it was:
Hydra writes nothing there before the task runs (`hydra.output_subdir: null`, its log
file opens at the first record), and `.hydra/` is written here, after the checks. A
sweep's jobs are run dirs like any other: a sweep relaunched into its sweep dir skips the
jobs another process is writing (one line each) and has nothing to do for finished ones.
"""
from __future__ import annotations

import dataclasses
import fcntl
import fnmatch
import json
import os
import shutil
import socket
import sys
import time

from fedrecon_bench import checkpoint, client_store, records
from fedrecon_bench.errors import UserError

LOCK_NAME = ".lock"
RESTART_FLAG = "restart_on_bad_checkpoint"
SPLITS = ("train", "val", "test")

# Config keys that may differ between launches into one run dir: none changes the
# trajectory or which rows metrics.jsonl gets. Every other key must match (docs/run-contract.md,
# "Reliability"): eval_every decides which val rows exist, and fast.clients / fast.max_group
# the order in which client updates are summed, so they stay fixed within a run.
MAY_DIFFER = (
    "rounds",                  # checked on its own: more extends a completed run
    "checkpoint_every",        # when the state is saved, not what it is
    RESTART_FLAG,
    "logger.*",                # the wandb mirror; metrics.jsonl is the record
    "data_dir",                # where the data lives (often $FEDRECON_BENCH_DATA); the loaded population is compared instead
    "data_cache_mb",           # how much read data stays in memory
    "fast.compilation_cache",  # where compiled programs are cached
    "task.download", "task.download_url", "task.download_md5", "task.cache_dir",  # how data is fetched or cached
    "task.default_engine",     # `engine` itself is compared
    "hydra.*",
    "tuned",                   # a preset's lookup table: the values it set are compared as keys
)
_OWN = {".hydra", "app.log", "__main__.log", LOCK_NAME}  # what a launch writes before training


class Refused(UserError):
    """The run dir holds another run, or another process is writing it; left as it was."""


class Busy(Refused):
    pass


class Lock:
    """An exclusive flock on <run_dir>/.lock, whose text names the writer (`pid host`)
    from `claim` until the run ends. A launch that wrote nothing leaves the file as it
    found it (or absent), so a refused launch changes nothing in the run dir."""

    def __init__(self, run_dir: str):
        self.path, self.claimed = os.path.join(run_dir, LOCK_NAME), False
        while True:
            try:
                fd, self.created = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                fd, self.created = os.open(self.path, os.O_RDWR), False
            _flock(fd, run_dir, self.path)
            try:  # the file may have been removed (with its run dir) since we opened it
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd, self._found = fd, (os.pread(fd, 4096, 0), os.fstat(fd))

    def claim(self) -> None:
        """Names this process as the run dir's writer."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.claimed = True

    def release(self, keep: bool = False) -> None:
        """Unlocks. `keep`: the launch wrote the run dir, and the file stays, naming no
        one; else it is put back as it was found."""
        if self.fd is None:
            return
        if self.created and not keep:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        elif keep:
            os.ftruncate(self.fd, 0)
        elif self.claimed:
            text, st = self._found
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, text, 0)
            os.utime(self.fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.close(self.fd)
        self.fd = None


def _flock(fd: int, run_dir: str, path: str) -> None:
    """Locks fd, or raises Busy naming the holder. A holder names itself once its checks
    have passed; one that is still checking (or only looking) gets 2 s to finish."""
    deadline = time.monotonic() + 2.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            text = os.pread(fd, 256, 0).decode(errors="replace").split()
        except OSError as e:  # a file system without locks: run, but say what is not guarded
            print(f"note: cannot lock {path} ({e.strerror}); a second process in {run_dir} "
                  "would not be stopped", file=sys.stderr)
            return
        if len(text) == 2 or time.monotonic() > deadline:
            os.close(fd)
            holder = (f"pid {text[0]} on host {text[1]}" if len(text) == 2 else
                      "another process (pid unknown: it is still checking the run dir)")
            raise Busy(f"{run_dir} is in use by {holder} (it holds {path}); wait for that "
                       "run to end or stop it, or use another run dir")
        time.sleep(0.05)


@dataclasses.dataclass
class Plan:
    """What this launch does with its run dir: nothing (`previous`: a completed run),
    continue from `saved`, or start from round 1."""

    run_dir: str
    lock: Lock
    previous: dict | None = None
    saved: checkpoint.Saved | None = None
    notes: list = dataclasses.field(default_factory=list)
    meta: dict = dataclasses.field(default_factory=dict)  # config and population, for checkpoints
    begun: bool = False  # the run dir has been written

    @property
    def done(self) -> bool:
        return self.previous is not None

    def restore(self, template_state):
        """(state, meta) of the checkpoint to continue from, or None."""
        if self.saved is None:
            return None
        return checkpoint.restore(self.saved, template_state), self.saved.meta

    def release(self) -> None:
        self.lock.release(keep=self.begun)


def prepare(cfg, run_dir: str) -> Plan:
    """Takes the run dir's lock and decides what this launch does (module docstring);
    raises Refused, holding nothing and having changed nothing, when it may not."""
    if not isinstance(cfg.get(RESTART_FLAG, False), bool):
        raise UserError(f"{RESTART_FLAG}={cfg.get(RESTART_FLAG)!r} must be true or false")
    os.makedirs(run_dir, exist_ok=True)
    lock = Lock(run_dir)
    try:
        plan = _plan(cfg, run_dir, Plan(run_dir, lock))
    except BaseException:
        lock.release()
        raise
    if plan.done:
        print(f"note: {plan.notes[0]}", file=sys.stderr)
        return plan
    lock.claim()
    if plan.saved is None:
        record_config(cfg, run_dir)  # nothing here to keep: the run's config is known now
    return plan


def _plan(cfg, run_dir: str, plan: Plan) -> Plan:
    summary = _read_json(os.path.join(run_dir, "summary.json")) or {}
    completed = summary.get("status") == "completed"
    done_rounds = summary.get("rounds") or summary.get("round_reached") or 0
    saved, bad = checkpoint.newest_valid(run_dir)
    reference = (saved.meta.get("config") if saved else None) or _hydra_config(run_dir)
    diverged = summary.get("status") == "diverged" and summary.get("round_reached", 0) <= cfg.rounds
    if (completed and cfg.rounds <= done_rounds) or diverged:
        check_same_config(run_dir, reference, config_of(cfg))
        why = ("this run, completed" if cfg.rounds == done_rounds else
               f"a completed run of {done_rounds} rounds, and rounds={cfg.rounds} asks for no more "
               f"(a run of {cfg.rounds} rounds from the start needs a new run dir)")
        if diverged:  # the same seed diverges again at the same round: a result, not a crash
            why = f"this run, diverged at round {summary['round_reached']} (a new run dir runs it again)"
        plan.previous, plan.notes = summary, [f"{run_dir} already holds {why}; nothing to do"]
        return plan
    listed = "; ".join(f"{os.path.basename(p)}: {why}" for p, why in bad)
    if saved is None and bad and not cfg.get(RESTART_FLAG, False):
        raise Refused(f"{run_dir}: no checkpoint can be read ({listed}); pass {RESTART_FLAG}=true "
                      "to run it again from round 1 there, or use a new run dir")
    if saved is None and completed and not bad:
        raise Refused(f"{run_dir} holds a completed run of {done_rounds} rounds but no checkpoint "
                      f"to continue it to rounds={cfg.rounds} from (checkpoint_every=0?); run "
                      f"rounds={cfg.rounds} in a new run dir")
    if saved is None:
        plan.notes = [f"{listed}; {RESTART_FLAG}=true: running {run_dir} again from round 1"] if bad else []
        return plan
    check_same_config(run_dir, reference, config_of(cfg))
    if cfg.rounds < saved.round:
        raise Refused(f"rounds={cfg.rounds} is below round {saved.round}, which {run_dir}'s "
                      f"checkpoint reached; pass rounds>={saved.round} to continue it, or run "
                      f"rounds={cfg.rounds} in a new run dir")
    plan.saved = saved
    plan.notes = [f"checkpoint {os.path.basename(p)} is unreadable ({why}); continuing from "
                  f"{os.path.basename(saved.path)} instead" for p, why in bad]
    if completed:
        plan.notes.append(f"extending {run_dir} from {done_rounds} to {cfg.rounds} rounds from its "
                          f"round-{saved.round} checkpoint (its end-of-run rows are replaced, as in a "
                          f"run of {cfg.rounds} rounds from the start)")
    return plan


def begin(plan: Plan, cfg, data) -> None:
    """After the data is loaded and checked, before the run writes: on a resume the
    population must be the checkpoint's; then .hydra/ is written and what this launch
    will not continue from is dropped (rows and checkpoints after the checkpoint, a
    summary that no longer holds; on a fresh start all of it and the disk client store)."""
    run_dir = plan.run_dir
    population = {s: [len(getattr(data, s)), int(sum(getattr(data, s).sizes))] for s in SPLITS}
    if plan.saved is not None:
        old = plan.saved.meta.get("population")
        if old is not None and old != population:
            raise Refused(f"{run_dir}: the data differs from the one its checkpoint was made with "
                          f"(clients, examples per split: {old} then, {population} now); point "
                          "data_dir at that run's data, or use a new run dir")
        record_config(cfg, run_dir)
    plan.begun = True
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    plan.meta = {"config": config_of(cfg), "population": population}
    metrics = os.path.join(run_dir, "metrics.jsonl")
    _remove(os.path.join(run_dir, "summary.json"))
    if plan.saved is not None:
        checkpoint.truncate_lines(metrics, plan.saved.meta["metrics_lines"])
        checkpoint.discard(run_dir, keep=lambda r: r <= plan.saved.round)
        _drop_records(run_dir, metrics)
        return
    for name in ("metrics.jsonl", "global_weights.npz"):
        _remove(os.path.join(run_dir, name))
    checkpoint.discard(run_dir)
    shutil.rmtree(os.path.join(run_dir, client_store.DISK_DIRNAME), ignore_errors=True)
    shutil.rmtree(os.path.join(run_dir, records.DIRNAME), ignore_errors=True)


def _drop_records(run_dir: str, metrics: str) -> None:
    """Per-client record files of evaluations whose rows were dropped (they will be redone)."""
    folder = os.path.join(run_dir, records.DIRNAME)
    if not os.path.isdir(folder):
        return
    kept = set()
    with open(metrics) as f:
        for line in f:
            row = json.loads(line)
            if row.get("split") in ("val", "test"):
                kept.add(os.path.basename(records.path(run_dir, row["split"], row["round"])))
    for name in os.listdir(folder):
        if name not in kept:
            os.remove(os.path.join(folder, name))


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


# --- The config a run was made with ------------------------------------------
def config_of(cfg) -> dict:
    """The config as plain JSON values, resolved where this process can."""
    from omegaconf import OmegaConf

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only Hydra's job context resolves
        plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return json.loads(json.dumps(plain))


def differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(key, old value, new value) for each dotted key outside MAY_DIFFER that differs."""
    a, b = _flat(old), _flat(new)
    keys = sorted(k for k in set(a) | set(b)
                  if not any(fnmatch.fnmatchcase(k, p) for p in MAY_DIFFER))
    missing = "(absent)"
    return [(k, a.get(k, missing), b.get(k, missing)) for k in keys if a.get(k, missing) != b.get(k, missing)]


def check_same_config(run_dir: str, reference: dict | None, new: dict) -> None:
    """Refuses to continue a run under other values: the rows would mix two experiments."""
    diffs = differences(reference, new) if reference else []
    if not diffs:
        return
    shown = ", ".join(f"{k} {_show(o)} -> {_show(n)}" for k, o, n in diffs[:6])
    more = f" and {len(diffs) - 6} more" if len(diffs) > 6 else ""
    raise Refused(f"{run_dir} holds a run made with other values ({shown}{more}); a run dir "
                  "continues one experiment: use a new run dir for these values, or continue "
                  f"this one with its own (resume={run_dir} without these overrides)")


def _show(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _hydra_config(run_dir: str) -> dict | None:
    """The config in .hydra/config.yaml (written only after these checks passed): the
    reference where no checkpoint records one."""
    path = os.path.join(run_dir, ".hydra", "config.yaml")
    if not os.path.isfile(path):
        return None
    from omegaconf import OmegaConf

    return config_of(OmegaConf.load(path))


# --- .hydra/ and a refused fresh run dir -----------------------------------
def record_config(cfg, run_dir: str) -> None:
    """.hydra/config.yaml, hydra.yaml and overrides.yaml, as Hydra writes them: Hydra
    itself does not here (hydra.output_subdir: null) so that a refused launch changes nothing.
    Only inside the Hydra job that runs in `run_dir`."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    if not HydraConfig.initialized():
        return
    hydra_cfg = OmegaConf.create(OmegaConf.to_container(HydraConfig.instance().cfg, resolve=False))
    try:
        here = os.path.abspath(str(HydraConfig.get().runtime.output_dir))
    except Exception:  # composed without a job (tests): no run dir of its own
        return
    if here != os.path.abspath(run_dir):
        return
    with open_dict(hydra_cfg):
        hydra_cfg.hydra.output_subdir = ".hydra"  # where these files are, as Hydra would say
    d = os.path.join(run_dir, ".hydra")
    os.makedirs(d, exist_ok=True)
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg),
                       ("overrides.yaml", HydraConfig.get().overrides.task)):
        tmp = os.path.join(d, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(OmegaConf.to_yaml(node))
        os.replace(tmp, os.path.join(d, name))


def remove_if_unused(run_dir: str) -> None:
    """A fresh run refused before training leaves no half-made run dir behind; a dir
    another process holds, or one with a run's files in it, stays."""
    if not os.path.isdir(run_dir) or not set(os.listdir(run_dir)) <= _OWN:
        return
    try:
        lock = Lock(run_dir)
    except Busy:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    lock.release()
    parent = os.path.dirname(os.path.abspath(run_dir))
    for _ in range(3):  # runs/<task>/<algo>/ made for it, if now empty (never the working dir)
        if parent == os.getcwd() or not os.path.isdir(parent) or os.listdir(parent):
            break
        os.rmdir(parent)
        parent = os.path.dirname(parent)
