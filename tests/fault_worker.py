"""Fault injection for ``test_fault_injection.py``: compiles forked from one warm process.

Run as ``python fault_worker.py MODE JSON``; prints one JSON line of results. Importing aicc once
and forking a child per compile makes a trial cost a compile (~0.1 s), not a Python start-up, so
dozens of SIGKILLs fit in a few seconds. The parent never creates an onnxruntime session (only
children do), so forking is safe.

Modes:
- ``kill-random``: compile model A or B (alternating) into one target and SIGKILL the child at a
  random moment of the compile; after each kill, recover, then the target must be exactly the old
  container or the complete new one; every few trials a full compile must leave no debris.
- ``kill-at``: the child kills itself right after its k-th call of a chosen step (``os.rename``,
  ``fileio.write_bytes``, ``os.fsync``, ``shutil.rmtree``): every step of a commit is hit.
- ``race``: two children compile into one target at once (each rename delayed so the commits
  overlap); both must succeed and leave one complete container and no debris.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("AICC_DISABLE_PLUGIN_AUTOLOAD", "1")

from aicc import _qpc_commit, fileio  # noqa: E402
from aicc.cli import compile_cmd, main  # noqa: E402, F401 - imported once, before the forks
from aicc.plugins import load_registries  # noqa: E402

load_registries()  # imports every built-in plugin module (and onnxruntime) once


def snapshot(folder: Path) -> dict[str, str] | None:
    if not folder.is_dir():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def debris(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def fork_compile(model: str, target: Path, hook=None) -> int:
    pid = os.fork()
    if pid == 0:  # the child: compile, or die at the hooked step
        try:
            sys.stdout = sys.stderr = open(os.devnull, "w")
            if hook is not None:
                hook()
            code = main(["compile", f"-m={model}", f"-aic-binary-dir={target}", "-compile-only"])
        except BaseException:
            code = 3
        os._exit(code)
    return pid


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def kill_hook(module, name: str, k: int):
    """Make the k-th call of ``module.name`` SIGKILL the process right after it returns."""
    def install():
        real = getattr(module, name)
        calls = [0]

        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        setattr(module, name, wrapper)
    return install


def reference(models: dict[str, str], work: Path) -> dict[str, dict[str, str]]:
    refs = {}
    for key, model in models.items():
        out = work / f"ref-{key}"
        assert wait(fork_compile(model, out)) == 0
        refs[key] = snapshot(out)
    return refs


def classify(target: Path, refs: dict) -> str:
    snap = snapshot(target)
    for key, ref in refs.items():
        if snap == ref:
            return key
    return "neither" if snap is not None else "missing"


def kill_random(models, work, trials, seed):
    rng = random.Random(seed)
    refs = reference(models, work)
    target = work / "out.qpc"
    start = time.perf_counter()
    assert wait(fork_compile(models["A"], target)) == 0
    duration = time.perf_counter() - start
    current, states, recovered, leftovers = "A", [], [], []
    for i in range(trials):
        new = "B" if current == "A" else "A"
        pid = fork_compile(models[new], target)
        time.sleep(rng.uniform(0, duration * 1.2))
        os.kill(pid, signal.SIGKILL)
        wait(pid)
        recovered += _qpc_commit.recover(target)
        state = classify(target, refs)
        states.append([current, new, state])
        current = state if state in refs else current
        if i % 10 == 9:  # a complete compile now must leave no debris at all
            assert wait(fork_compile(models[current], target)) == 0
            leftovers += debris(target)
    return {"states": states, "recovered": recovered, "leftovers": leftovers,
            "duration": duration}


STEPS = {"rename": (os, "rename"), "write_bytes": (fileio, "write_bytes"),
         "fsync": (os, "fsync"), "rmtree": (__import__("shutil"), "rmtree")}


def kill_at(models, work, steps):
    refs = reference(models, work)
    target = work / "out.qpc"
    results = []
    assert wait(fork_compile(models["A"], target)) == 0
    for step, k in steps:
        module, name = STEPS[step]
        code = wait(fork_compile(models["B"], target, kill_hook(module, name, k)))
        before = debris(target)
        recovered = _qpc_commit.recover(target)
        state = classify(target, refs)
        # the next complete compile (back to A, the old container of the next step) cleans up
        assert wait(fork_compile(models["A"], target)) == 0
        results.append({"step": step, "k": k, "code": code, "debris": before,
                        "recovered": recovered, "state": state, "after": debris(target)})
    return {"results": results}


def slow_renames():
    """Widen the race: every ``os.rename`` first sleeps, so two commits overlap."""
    real = os.rename

    def wrapper(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)
    os.rename = wrapper


def race(models, work, rounds):
    refs = reference(models, work)
    target = work / "out.qpc"
    out = []
    for _ in range(rounds):
        pids = [fork_compile(models["A"], target, slow_renames),
                fork_compile(models["B"], target, slow_renames)]
        codes = [wait(p) for p in pids]
        out.append({"codes": codes, "state": classify(target, refs), "debris": debris(target)})
    return {"rounds": out}


if __name__ == "__main__":
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    work = Path(args["work"])
    models = args["models"]
    if mode == "kill-random":
        result = kill_random(models, work, args["trials"], args["seed"])
    elif mode == "kill-at":
        result = kill_at(models, work, [tuple(s) for s in args["steps"]])
    else:
        result = race(models, work, args["rounds"])
    print(json.dumps(result))
