"""Interleaved timing processes: `--repeat N` timing processes take turns, in short blocks, under one baton.

Why: on shared VMs the host runs fast and slow for seconds at a time (resnet20 torch.ao int8 at batch 1, one
instance timed for 80 s: medians of 2-s windows from 1.06 to 2.88 ms, with no steal time visible to the guest).
Processes timed one after another each sit in whichever phase they met, so their medians differed by 35% with
nothing differing between the processes. Taking turns in blocks of a tenth of `min_duration_s` spreads every
process over the same phases: replayed on that 80-s trace, three processes agree within 15% in 92-98% of
starting points, against 47% one after another. What is left between them is theirs (their own load, memory
layout, kernel choice), which is what a run-to-run interval is meant to show.

Only the baton holder runs: loading and warm-up are turns too, and an idle process waits in a blocking read.
Protocol: the worker writes "go" or "stop" on the process's command pipe; the process answers each with one
JSON line on its reply pipe. Per timed shape (batch 1, then each throughput batch): the first "go" loads and
warms up; each later "go" runs one block; "stop" ends the shape (GPU stage timing runs then, still in turn).
A reply says whether this process has met min_count and min_duration_s; the worker stops a shape once all have.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BLOCKS_PER_DURATION = 10  # a block lasts min_duration_s / 10: 0.1 s at the default 1 s


class Turns:
    """A timing process's side: take() blocks until the worker passes the baton (True: run a block, False:
    stop this shape); give() hands it back. Without pipes (a process run by hand) it takes turns with itself."""

    def __init__(self, fds: str | None = None):
        self.enough = False
        self.rd = self.wr = None
        if fds:
            r, w = (int(f) for f in fds.split(","))
            self.rd, self.wr = os.fdopen(r, "r"), os.fdopen(w, "w")

    def take(self) -> bool:
        if self.rd is None:
            go, self.enough = not self.enough, False  # alone: stop once enough; the next shape starts afresh
            return go
        line = self.rd.readline()
        if not line:  # the worker is gone
            raise SystemExit(1)
        return line.strip() == "go"

    def give(self, enough: bool = False) -> None:
        self.enough = enough
        if self.wr is not None:
            self.wr.write(json.dumps({"enough": bool(enough)}) + "\n")
            self.wr.flush()


class Timer:
    """The worker's side of one timing process."""

    def __init__(self, argv: list[str]):
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self.proc = subprocess.Popen([*argv, f"{cmd_r},{rep_w}"], pass_fds=(cmd_r, rep_w))
        os.close(cmd_r)
        os.close(rep_w)  # ours closed, so the process's exit reads as end of file
        self.w, self.r = os.fdopen(cmd_w, "w"), os.fdopen(rep_r, "r")
        self.alive, self.enough = True, False

    def turn(self, command: str) -> None:
        """Pass the baton and wait for it back. A process that died (its reason is in its output file) leaves
        the rotation."""
        if not self.alive:
            return
        try:
            self.w.write(command + "\n")
            self.w.flush()
            line = self.r.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.alive = False
            return
        self.enough = bool(json.loads(line)["enough"])

    def finish(self) -> int:
        for f in (self.w, self.r):
            try:
                f.close()
            except BrokenPipeError:
                pass
        return self.proc.wait()


def run_timing(job: dict, meta: Path, outs: list[Path]) -> list[int]:
    """Run len(outs) timing processes interleaved; their exit codes. Each writes its result to its out path."""
    timers = [Timer([sys.executable, "-m", "harness.phases", "timing", job["_job_path"], str(meta), str(out)])
              for out in outs]
    try:
        for _ in range(1 + len(job["settings"]["batch_sizes"])):
            for t in timers:  # load + warm-up, one process at a time
                t.turn("go")
            while not all(t.enough for t in timers if t.alive):
                for t in timers:
                    t.turn("go")
            for t in timers:
                t.turn("stop")
    finally:
        codes = [t.finish() for t in timers]
    return codes
