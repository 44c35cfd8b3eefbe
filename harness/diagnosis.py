"""Why a quantized or reduced-precision cell is not faster than its backend's fp32 cell: a table of rules, each
reading measured evidence (the cell's per-op profile, its artifact's details and read-back runtime config, the
CPU's flags) and saying what it found in numbers. A cell is diagnosed when it is slower than fp32, or less
than MIN_SPEEDUP faster, at batch 1 or at the largest batch; no rule keys on a backend's name alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.envinfo import VNNI
from harness.profiles import FLOAT, INT8

MIN_SPEEDUP = 1.1
NATIVE = {"fp16": ("avx512_fp16", "amx_fp16"), "bf16": ("avx512_bf16", "amx_bf16")}
QUANTIZED = ("int8", "uint8", "dynamic")
QDQ_SHARE, FLOAT_SHARE, REFERENCE_SHARE, INT8_SHARE = 0.10, 0.30, 0.20, 0.50


@dataclass(frozen=True)
class Case:
    cell: dict  # the cell being diagnosed (precision, backend, details, profile, ...)
    ref: dict  # its backend's fp32 cell
    isa: dict  # CPU flag -> present (run.json environment.cpu.isa)
    batch: str  # the profiled batch where the cell gained least against fp32
    speedup: dict  # batch -> the cell's speed / fp32's (latency at 1, throughput at the largest)

    @property
    def profile(self) -> dict:
        return self.cell["profile"]["batches"][self.batch]

    def ops(self, role: str | None = None, precisions: tuple = ()) -> list[dict]:
        return [o for o in self.profile["ops"] if (role is None or o["role"] == role)
                and (not precisions or o["precision"] in precisions)]

    def share(self, ops: list[dict]) -> float:
        return sum(o["share"] or 0.0 for o in ops)

    def at(self) -> str:
        return f"at batch {self.batch}"


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _listed(ops: list[dict], n: int = 3) -> str:
    """"Conv x10 36%", or "CONV_2D x19" from a runtime without op times."""
    return ", ".join(f"{o['op_type']} x{o['count']}" + (f" {_pct(o['share'])}" if o["share"] is not None else "")
                     for o in ops[:n])


def _count(case: Case, precisions: tuple) -> int:
    return sum(n for p, n in case.profile["compute_ops"].items() if p in precisions)


def int8_without_vnni(case: Case) -> str | None:
    """Most of the compute in int8 kernels (by time; by count where the runtime has no op timer)."""
    shares = case.profile["shares"]
    if case.cell["precision"] not in QUANTIZED or any(case.isa.get(f) for f in VNNI):
        return None
    n8, n = _count(case, INT8), _count(case, INT8 + FLOAT)
    part = shares["compute_int8"] if shares else (n8 / n if n else 0.0)
    if (part or 0) < INT8_SHARE:
        return None
    has = [f for f in ("avx2", "avx512f", "avx512bw") if case.isa.get(f)]
    where = (f"{_pct(shares['compute'] * shares['compute_int8'])} of the op time" if shares
             else "no op times from this runtime")
    return (f"CPU flags: none of {'/'.join(VNNI)} (has {'/'.join(has) or 'none of avx2/avx512'}); "
            f"{n8} of {n} compute ops ran in int8, {where} {case.at()}")


def s8s8_float_convs(case: Case) -> str | None:
    if case.cell["details"].get("scheme") != "S8S8":
        return None
    floats = case.ops("compute", FLOAT)
    if not floats:
        return None
    qdq = case.share(case.ops("qdq"))
    return (f"int8 activations (S8S8 QDQ): {_count(case, FLOAT)} of {_count(case, INT8 + FLOAT)} compute ops ran "
            f"in float, {_pct(case.share(floats))} of the op time {case.at()} ({_listed(floats)}), between "
            f"Quantize/Dequantize nodes taking {_pct(qdq)}")


def integer_ops(case: Case) -> str | None:
    ops = [o for o in case.profile["ops"] if o["op_type"] in ("ConvInteger", "MatMulInteger")]
    if not ops:
        return None
    rescale = [o for o in case.profile["ops"] if o["op_type"] in ("DynamicQuantizeLinear", "Cast", "Mul")]
    return (f"{_listed(ops)} of the op time {case.at()}, plus {_pct(case.share(rescale))} in the per-call "
            f"DynamicQuantizeLinear / Cast / Mul around them")


def unfused_qdq(case: Case) -> str | None:
    shares = case.profile["shares"]
    if case.cell["precision"] not in QUANTIZED or not shares or shares["qdq"] < QDQ_SHARE:
        return None
    qdq = case.ops("qdq")
    return (f"Quantize/Dequantize ops: {sum(o['count'] for o in qdq)} a call, {_pct(shares['qdq'])} of the op time "
            f"{case.at()} ({_listed(qdq)})")


def not_frozen(case: Case) -> str | None:
    config = case.cell["details"].get("runtime_config") or {}
    if case.cell["precision"] not in QUANTIZED or "freezing" not in config:
        return None
    lowered = config.get("int8_kernels") or {}
    if config["freezing"] and sum(lowered.values()) > 0:
        return None
    return (f"runtime config: freezing={config['freezing']}, int8 ops lowered to oneDNN kernels {lowered}; "
            f"{_count(case, INT8)} of {_count(case, INT8 + FLOAT)} compute ops in int8 {case.at()}")


def float_fallback(case: Case) -> str | None:
    shares = case.profile["shares"]
    if case.cell["precision"] not in QUANTIZED or not shares or case.cell["details"].get("scheme") == "S8S8":
        return None
    floats = case.ops("compute", FLOAT)
    if 1 - (shares["compute_int8"] or 0) < FLOAT_SHARE or not floats:
        return None
    return (f"{_count(case, FLOAT)} of {_count(case, INT8 + FLOAT)} compute ops ran in float, "
            f"{_pct(case.share(floats))} of the op time {case.at()} ({_listed(floats)})")


def emulated(case: Case) -> str | None:
    precision = case.cell["precision"]
    if precision not in NATIVE or any(case.isa.get(f) for f in NATIVE[precision]):
        return None
    ops = case.ops("compute", (precision,))
    if not ops:
        return None
    return (f"CPU flags: none of {'/'.join(NATIVE[precision])}; {_count(case, (precision,))} compute ops ran in "
            f"{precision}, {_pct(case.share(ops))} of the op time {case.at()} ({_listed(ops, 2)})")


def precision_not_used(case: Case) -> str | None:
    precision = case.cell["precision"]
    if precision not in NATIVE or _count(case, (precision,)) or not case.profile["compute_ops"]:
        return None
    ran = ", ".join(f"{n} {p}" for p, n in case.profile["compute_ops"].items())
    return f"0 compute ops ran in {precision} (they ran: {ran}) {case.at()}"


def reference_kernels(case: Case) -> str | None:
    shares = case.profile["shares"]
    if not shares or shares["reference"] < REFERENCE_SHARE:
        return None
    return f"reference (unoptimized) kernels took {_pct(shares['reference'])} of the op time {case.at()}: " + \
        ", ".join(reference_names(case.profile))


def reference_names(profile: dict) -> list[str]:
    """The reference kernels that took more than 1% of a profiled batch's op time."""
    return sorted({o["kernel"] for o in profile["ops"] if o["share"] and o["share"] > 0.01
                   and ("slow_conv" in o["kernel"] or o["kernel"].startswith("ref"))})


def _profiled_call(cell: dict) -> str | None:
    """A batch-1 call as the profile pass measured it: its ops' total, or the call's wall time where the
    runtime has no op timer (TFLite / LiteRT); None without a batch-1 profile."""
    prof = ((cell.get("profile") or {}).get("batches") or {}).get("1") or {}
    if prof.get("total_ms") is not None:
        return f"{prof['total_ms']:.2f} ms"
    return f"{prof['wall_ms']:.2f} ms (wall)" if prof.get("wall_ms") is not None else None


def within_host_swing(case: Case) -> str | None:
    """Batch 1 only: the swing is measured on the interleaved latency blocks, throughput has none."""
    if case.batch != "1":
        return None
    swings = {c["precision"]: (c.get("details") or {}).get("host_swing") for c in (case.cell, case.ref)}
    gap = max(case.speedup["1"], 1 / case.speedup["1"]) - 1  # how far apart the two p50s are, either way
    if max((v or 0.0) for v in swings.values()) <= gap:
        return None
    timed = ", ".join(f"{c['precision']} p50 {c['latency_ms']['p50']:.2f} ms (host swung "
                      f"{_pct(swings[c['precision']] or 0.0)})" for c in (case.ref, case.cell))
    # the profile pass timed the same shape later, in other processes: a second look, not a tie-breaker
    later = ", ".join(f"{c['precision']} {ms}" for c in (case.ref, case.cell) if (ms := _profiled_call(c)))
    return (f"batch 1: {timed}: the p50s differ by {_pct(gap)}, less than the host's swing; the profile pass, "
            f"later, measured a call at {later or 'no batch-1 profile'}")


@dataclass(frozen=True)
class Rule:
    name: str
    check: Callable[[Case], str | None]  # evidence, or None when the rule does not apply
    advice: str


RULES = (
    Rule("int8_without_vnni", int8_without_vnni,
         "Without VNNI an int8 dot product takes three AVX2/AVX-512 instructions (vpmaddubsw, vpmaddwd, vpaddd) "
         "and can saturate its int16 sums: int8 gains little over fp32 FMA here. A CPU with VNNI or AMX runs "
         "these kernels several times faster."),
    Rule("s8s8_float_convs", s8s8_float_convs,
         "ONNX Runtime's x86 kernels are built for uint8 activations (U8S8); with int8 activations it left these "
         "nodes in float between Q/DQ pairs. Quantize activations as uint8 (QuantType.QUInt8, the uint8 cell)."),
    Rule("integer_ops", integer_ops,
         "Dynamic quantization turns Conv into ConvInteger (and MatMul into MatMulInteger), which has no fused "
         "fast path on CPU and needs a quantize and an int32 rescale per call: quantize CNNs statically."),
    Rule("unfused_qdq", unfused_qdq,
         "Quantize/Dequantize pairs were not folded into the neighbouring kernels: check the runtime's graph "
         "optimization level and opset, and that each quantized op has an int8 kernel to fold into."),
    Rule("not_frozen", not_frozen,
         "Inductor selects oneDNN's int8 kernels only on a frozen graph (torch._inductor.config.freezing = True) "
         "with X86InductorQuantizer's fusion passes registered; otherwise int8 runs as dequantize -> fp32."),
    Rule("float_fallback", float_fallback,
         "These ops have no int8 kernel in this runtime (depthwise or grouped convolutions, SiLU/SE blocks and "
         "dynamically quantized convolutions often do not) and run in float: leave them out of quantization "
         "or pick a runtime with int8 kernels for them."),
    Rule("emulated", emulated,
         "This CPU has no native arithmetic for this precision: each op converts to fp32 and back, or runs a "
         "portable reference kernel. It pays off on CPUs with AVX512-FP16/AMX (fp16) or AVX512-BF16/AMX (bf16)."),
    Rule("precision_not_used", precision_not_used,
         "The runtime ran the compute ops in another precision (no kernels for this one here): the cell "
         "measures that precision plus the conversions, not the one asked for."),
    Rule("reference_kernels", reference_kernels,
         "A reference kernel is the runtime's portable fallback, chosen when no optimized kernel fits the "
         "shape or precision."),
)
# Consulted only when no rule above fits: where a kernel cause is measured, the host's swing does not explain
# the gap away (torch-inductor dynamic, 52% of its time in slow_conv2d, slower in the profile pass too).
NOISE = Rule("within_host_swing", within_host_swing,
             "The host moved more during these timings than the two cells differ, and no kernel cause shows in "
             "the profile: this batch-1 figure cannot say which is faster. Re-run both with --repeat 3 (a "
             "run-to-run interval) on a quieter host; the largest batch's throughput meanwhile.")
NO_MATCH = "no_rule_matched"


def speedups(cell: dict, ref: dict) -> dict[str, float]:
    """batch -> how much faster the cell is than fp32: batch-1 latency p50, throughput at each common batch."""
    out = {}
    if (cell.get("latency_ms") or {}).get("p50") and (ref.get("latency_ms") or {}).get("p50"):
        out["1"] = ref["latency_ms"]["p50"] / cell["latency_ms"]["p50"]
    theirs = {t["batch"]: t["images_per_s"] for t in ref.get("throughput") or []}
    for t in cell.get("throughput") or []:
        if theirs.get(t["batch"]):
            out[str(t["batch"])] = t["images_per_s"] / theirs[t["batch"]]
    return out


def weakest(gains: dict[str, float], cell: dict) -> str | None:
    """Among the batches the cell's profile covers, the one where it gained least against fp32 (the one its
    diagnosis reads), or None. Not over every timed batch: with two throughput batches and a profile of the
    largest, the report would name a batch the diagnosis never read."""
    profiled = {b: s for b, s in gains.items() if b in ((cell.get("profile") or {}).get("batches") or {})}
    return min(profiled, key=profiled.get) if profiled else None


def diagnose(cell: dict, ref: dict | None, isa: dict) -> list[dict] | None:
    """None: nothing to diagnose with (an fp32 cell, no fp32 cell, no profile). []: the cell is at least
    MIN_SPEEDUP faster than fp32 at every batch. Else one {rule, evidence, advice} per rule that applies."""
    profile = cell.get("profile") or {}
    if cell["precision"] == "fp32" or not ref or ref.get("status") != "ok" or "batches" not in profile:
        return None
    gains = {b: s for b, s in speedups(cell, ref).items() if b in profile["batches"]}
    if not gains or min(gains.values()) >= MIN_SPEEDUP:
        return []
    batch = weakest(gains, cell)
    case = Case(cell, ref, isa, batch, gains)
    found = [{"rule": r.name, "evidence": evidence, "advice": r.advice}
             for r in RULES if (evidence := r.check(case)) is not None]
    if not found and (evidence := NOISE.check(case)) is not None:
        found = [{"rule": NOISE.name, "evidence": evidence, "advice": NOISE.advice}]
    return found or [{"rule": NO_MATCH, "evidence": f"top ops {case.at()}: {_listed(case.profile['ops'], 5)}",
                      "advice": "None of the rules fits: read the top ops against the fp32 cell's profile."}]
