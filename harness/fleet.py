"""Many container targets at once: `harness fleet run|render|collect`.

`fleet run` runs each target's image through its own Docker engine (`[container] docker_host`, a Docker context,
or the local engine), the engines concurrently. Targets on one engine take turns, said so: two benchmarks on one
machine disturb each other's timings. Each target is `harness container run` in a process of its own, its output
streamed with the target's name in front; a target that fails (engine unreachable, build or run failed) costs
only itself. `fleet.json` (beside the runs, in results/fleets/<fleet id>/) says what each target did; the exit
code is 0 when every target finished, 1 when some failed, 2 on bad input. `--resume` finishes the newest fleet of
the same targets: finished targets are skipped, an unfinished run goes on with `harness run --resume`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from harness.config import Target, load_target
from harness.errors import UserError

FLEET_SCHEMA_VERSION = 1
_LOCK = threading.Lock()
_CHILDREN: list[subprocess.Popen] = []  # the running `container run` processes, told to stop on an interrupt


def add_parser(sub) -> None:
    p = sub.add_parser("fleet", help="run several container targets at once (Docker engines), or render "
                       "Kubernetes Jobs for them")
    fsub = p.add_subparsers(dest="action", required=True)
    r = fsub.add_parser("run", help="run the targets concurrently, one engine each; `-- ARGS` go to harness run")
    r.add_argument("--targets", required=True, help="comma list of container targets, e.g. x86-cpu,t4,a100")
    r.add_argument("--results", default="results", help="results folder (default results/)")
    r.add_argument("--resume", action="store_true", help="finish the newest fleet of these targets")
    r.add_argument("args", nargs="*", help="after --: --data-dir DIR and `harness run` flags")
    k = fsub.add_parser("render", help="write a Kubernetes Job per target (--kubernetes)")
    k.add_argument("--kubernetes", action="store_true", required=True, help="render Kubernetes manifests")
    k.add_argument("--targets", required=True, help="comma list of targets with a [kubernetes] table")
    k.add_argument("-o", "--out", required=True, help="folder for the manifests (one YAML file per target)")
    k.add_argument("--digest", action="append", default=[], metavar="TARGET=sha256:...",
                   help="the pushed image's digest for a target (else read from the local engine's RepoDigests)")
    k.add_argument("args", nargs="*", help="after --: `harness run` flags for the Job")
    c = fsub.add_parser("collect", help="copy the Jobs' run folders back from the results volume (--kubernetes)")
    c.add_argument("--kubernetes", action="store_true", required=True, help="collect from a cluster")
    c.add_argument("--targets", required=True, help="comma list of targets with a [kubernetes] table")
    c.add_argument("--results", default="results", help="results folder (default results/)")


def pick_targets(spec: str, need: str = "container") -> list[Target]:
    """--targets: distinct, known targets that have a [container] (and, to render, a [kubernetes]) table."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UserError(f"--targets {spec!r}: expected a comma list of targets, e.g. x86-cpu,t4")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"--targets {spec!r}: {', '.join(dup)} named twice")
    targets = [load_target(n) for n in names]
    for t in targets:
        if not t.container:
            raise UserError(f"--targets {t.name}: {t.path} has no [container] table, so it has no image to run")
        if need == "kubernetes" and not t.kubernetes:
            raise UserError(f"--targets {t.name}: {t.path} has no [kubernetes] table (namespace, data_pvc, "
                            "results_pvc, ...): see the README, 'Running on several machines'")
    return targets


def engine_of(target: Target) -> str:
    """Which Docker engine the target's commands reach (targets with the same one take turns)."""
    c = target.container
    if c.get("docker_host"):
        return c["docker_host"]
    if c.get("docker_context"):
        return f"context {c['docker_context']}"
    return os.environ.get("DOCKER_HOST") or "the local engine"


def lanes(targets: list[Target]) -> list[list[Target]]:
    """Targets grouped by engine, in the order given: each lane runs its targets one after another."""
    out: dict[str, list[Target]] = {}
    for t in targets:
        out.setdefault(engine_of(t), []).append(t)
    return list(out.values())


class Record:
    """fleet.json: one entry per target, rewritten whole (temp file + rename) at every change."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    @classmethod
    def new(cls, results: Path, targets: list[Target], args: list[str]) -> Record:
        fleet_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        folder = results / "fleets" / fleet_id
        if folder.exists():
            raise UserError(f"{folder}: a fleet with this id exists (started the same second); run again")
        entries = {t.name: {"engine": engine_of(t), "status": "pending", "reason": None, "run": None,
                            "wall_s": None} for t in targets}
        data = {"schema_version": FLEET_SCHEMA_VERSION, "fleet_id": fleet_id, "args": args, "targets": entries}
        return cls(folder / "fleet.json", data)

    @classmethod
    def newest(cls, results: Path, targets: list[Target]) -> Record:
        names = sorted(t.name for t in targets)
        for path in sorted((results / "fleets").glob("*/fleet.json"), reverse=True):
            data = json.loads(path.read_text())
            if data.get("schema_version") != FLEET_SCHEMA_VERSION:
                raise UserError(f"{path}: key 'schema_version' = {data.get('schema_version')!r}: expected "
                                f"{FLEET_SCHEMA_VERSION}")
            if sorted(data["targets"]) == names:
                return cls(path, data)
        raise UserError(f"--resume: no fleet of {', '.join(names)} under {results / 'fleets'}")

    def update(self, name: str, **fields) -> None:
        with _LOCK:
            self.data["targets"][name].update(fields)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1) + "\n")
            os.replace(tmp, self.path)


def say(name: str, line: str) -> None:
    with _LOCK:
        print(f"[{name}] {line}", flush=True)


def _command(target: Target, results: Path, args: list[str], resume: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "harness", "container", "run", "--target", target.path, "--results", str(results)]
    return cmd + (["--resume-run", resume] if resume else []) + ["--", *args]


def run_target(target: Target, record: Record, results: Path, args: list[str]) -> None:
    """`harness container run` for one target in a process of its own; its lines go out with the name in front."""
    entry = record.data["targets"][target.name]
    # a run that came back unfinished goes on; one that never came back to the host starts again
    resume = entry["run"] if entry["run"] and (Path(entry["run"]) / "run.json").is_file() else None
    record.update(target.name, status="running", reason=None, engine=engine_of(target))
    t0 = time.perf_counter()
    # unbuffered: the lines arrive as they are printed, and an error line comes after the lines before it
    proc = subprocess.Popen(_command(target, results, args, resume), stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.STDOUT, bufsize=1, errors="replace",
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _CHILDREN.append(proc)
    last, error = "", None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            last = line
            say(target.name, line)
        if line.startswith("harness: error: "):
            error = line.removeprefix("harness: error: ")
        if line.startswith("run folder: "):  # container run says where the run lives before it starts
            record.update(target.name, run=line.split(": ", 1)[1])
    code = proc.wait()
    wall = round(time.perf_counter() - t0, 1)
    if code == 0:
        record.update(target.name, status="ok", wall_s=wall)
    else:
        record.update(target.name, status="failed", wall_s=wall, reason=error or f"exit {code}: {last}")
    say(target.name, f"{'finished' if code == 0 else 'FAILED'} in {wall:.0f} s")


def _engine_answers(target: Target) -> str | None:
    """None when the target's Docker engine answers, else why not."""
    from harness import container

    try:
        info = container.docker(target, "info", "--format", "{{.ServerVersion}}", check=False)
    except UserError as exc:  # no docker CLI
        return str(exc)
    if info.returncode == 0:
        return None
    err = [ln for ln in (info.stderr or "").splitlines() if ln.strip()]
    return f"Docker engine {engine_of(target)} does not answer: {err[-1] if err else 'no output'}"


def run_lane(lane: list[Target], record: Record, results: Path, args: list[str]) -> None:
    todo = [t for t in lane if record.data["targets"][t.name]["status"] != "ok"]
    for target in lane:
        if target not in todo:
            say(target.name, f"finished in an earlier try: {record.data['targets'][target.name]['run']}")
    reason = _engine_answers(todo[0]) if todo else None
    for target in todo:
        if reason:  # every target of this engine fails, said once per target; the other lanes go on
            record.update(target.name, status="failed", reason=reason, engine=engine_of(target))
            say(target.name, f"FAILED: {reason}")
            continue
        try:
            run_target(target, record, results, args)
        except Exception as exc:  # noqa: BLE001 - one target's surprise must not end its lane or leave it 'running'
            record.update(target.name, status="failed", reason=f"{type(exc).__name__}: {exc}")
            say(target.name, f"FAILED: {type(exc).__name__}: {exc}")


def _stop_children() -> None:
    """Interrupted: each `container run` stops its container and copies back what it finished (then --resume)."""
    for proc in _CHILDREN:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in _CHILDREN:
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()


def cmd_fleet(args) -> int:
    from harness.cli import _host_data, _split_data_dir

    if args.action == "render":
        data, rest = _split_data_dir(args.args)
        if data:
            raise UserError(f"--data-dir {data}: a Job reads its data from the target's kubernetes.data_pvc")
        from harness import k8s_io

        return k8s_io.render(pick_targets(args.targets, "kubernetes"), Path(args.out), args.digest, rest)
    if args.action == "collect":
        return collect(pick_targets(args.targets, "kubernetes"), Path(args.results))
    targets = pick_targets(args.targets)
    data, rest = _split_data_dir(args.args)
    data = _host_data(data, "the host's data folder (containers run without network)")
    results = Path(args.results)
    record = Record.newest(results, targets) if args.resume else Record.new(results, targets, rest)
    if args.resume and rest and rest != record.data["args"]:
        raise UserError(f"--resume: the fleet ran with `-- {' '.join(record.data['args'])}`; a resumed fleet "
                        f"keeps its settings (give only --data-dir), not `-- {' '.join(rest)}`")
    run_args = ["--data-dir", str(data), *record.data["args"]]
    plan = lanes(targets)
    for lane in plan:
        if len(lane) > 1:
            print(f"fleet: {', '.join(t.name for t in lane)} share {engine_of(lane[0])}: they run one after the "
                  "other (two benchmarks on one machine disturb each other's timings)", flush=True)
    print(f"fleet {record.data['fleet_id']}: {len(targets)} targets on {len(plan)} engines; {record.path}", flush=True)
    # daemon threads: on Ctrl-C the fleet stops; each `container run` child gets the signal and removes its container
    threads = [threading.Thread(target=run_lane, args=(lane, record, results, run_args), daemon=True)
               for lane in plan]
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a TERM from CI or a scheduler: as Ctrl-C
    try:
        for th in threads:
            th.start()
        for th in threads:
            while th.is_alive():
                th.join(timeout=1.0)  # a bare join() would not see Ctrl-C until the thread ended
    except KeyboardInterrupt:
        _stop_children()
        raise
    return finish(record)


def finish(record: Record) -> int:
    """Render the report of every finished target's run beside fleet.json; 0 all finished, 1 some failed."""
    from harness.report import render as render_report

    entries = record.data["targets"]
    done = [Path(e["run"]) for e in entries.values()
            if e["status"] == "ok" and e["run"] and (Path(e["run"]) / "run.json").is_file()]
    if done:
        md, _ = render_report(done, record.path.parent / "report")
        print(f"fleet: report of {len(done)} targets in {md}")
    failed = {n: e for n, e in entries.items() if e["status"] != "ok"}
    for name, e in failed.items():
        print(f"fleet: {name} failed: {e['reason']}", file=sys.stderr)
    print(f"fleet: {len(entries) - len(failed)}/{len(entries)} targets finished; {record.path}")
    return 1 if failed else 0


def collect(targets: list[Target], results: Path) -> int:
    from harness import k8s_io

    return k8s_io.collect(targets, results)
