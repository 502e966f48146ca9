"""Compile the Triton kernel for Hopper (sm_90a) on a machine without a GPU, and report what came out.

    python benchmarks/kernel_compile_sm90.py [--matrix] [--probe] [--out FILE.json] [NAME ...]

Run with ``TRITON_INTERPRET`` unset (the interpreter compiles nothing). For each variant (partial kind,
fusions, head dim, launch configuration) it records whether Triton compiled it, the shared memory it
needs, the wgmma (Hopper matrix) instruction count, whether K/V go through the TMA engine
(``cp.async.bulk.tensor``), and ptxas's registers per thread and spill bytes (``ptxas -v``, the assembler
Triton ships). ``--matrix`` compiles every tuning candidate of head dim 128 for every partial kind (what
the tuner may pick on an H100/H200); ``--probe`` adds whether the compiler warp-specialises the kernel's
loop on sm_90 and sm_100 (the probe the tuner runs before offering the warp-specialised candidates).
Used by tests/kernels/test_compile_sm90.py, and to judge a kernel change before a GPU is available:
spills and a missing wgmma/TMA cost speed; a compile failure there would be dropped by the tuner on the
GPU.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from accel.kernels import triton_tuning as tuning  # noqa: E402
from accel.kernels.triton_fwd import _bsa_fwd_kernel, kernel_head_dim, kernel_signature  # noqa: E402

KINDS = {"full-only": 0, "tiles": 1, "window": 2, "ellipsoid": 3}
# (name, partial kind, key padding, prior+affine fusions, head dim, dtype, config)
VARIANTS = [
    ("full-edge-portable", "full-only", False, False, 128, "bf16", tuning.KernelConfig(128, 64, 8, 3)),
    ("tiles-pad-persistent", "tiles", True, False, 128, "bf16", tuning.KernelConfig(64, 32, 4, 3, persistent=True)),
    ("window-tma", "window", False, False, 128, "bf16", tuning.KernelConfig(128, 128, 8, 2, tma=True)),
    ("ellipsoid-fused-tma-ws", "ellipsoid", True, True, 128, "bf16",
     tuning.KernelConfig(128, 128, 8, 2, tma=True, warp_spec=True)),
    ("full-d96-fp16", "full-only", False, True, 96, "fp16", tuning.KernelConfig(128, 64, 8, 3)),
]

def ptxas_report(ptx: str, capability: int) -> dict:
    """Registers per thread and spill bytes, from ``ptxas -v``."""
    from triton.backends.nvidia.compiler import get_ptxas

    arch = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
    try:  # the signature changed across Triton versions
        ptxas = get_ptxas(capability).path
    except TypeError:
        ptxas = get_ptxas().path
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", str(src), "-o", str(src.with_suffix(".cubin"))],
                              capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    regs = re.findall(r"Used (\d+) registers", text)
    spills = [int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)]
    return {"registers": int(regs[-1]) if regs else None, "spill_bytes": sum(spills) if spills else None,
            "ptxas_ok": proc.returncode == 0}


def compile_variant(name: str, kind: str, pad: bool, fused: bool, d: int, dtype: str, cfg: tuning.KernelConfig,
                    capability: int = 90) -> dict:
    """Compile one variant for ``sm_<capability>`` and report (see the module docstring)."""
    constexprs = dict(
        HEAD_DIM=d, BLOCK_D=kernel_head_dim(d), Q_BLOCK=128, KV_BLOCK=128, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        UPCAST=False, DOT_PRECISION="tf32", HAS_PRIOR=fused, HAS_AFFINE=fused, PART_KIND=KINDS[kind], N_AXES=3,
        K_FREE=True, HAS_EDGE=True, HAS_KEYPAD=pad, USE_TMA=cfg.tma, WARP_SPEC=cfg.warp_spec,
        PERSISTENT=cfg.persistent,
    )
    record = {"name": name, "kind": kind, "key_pad": pad, "fused": fused, "head_dim": d, "dtype": dtype,
              "config": str(cfg)}
    t = time.monotonic()
    try:
        src = ASTSource(fn=_bsa_fwd_kernel, signature=kernel_signature(dtype), constexprs=constexprs)
        compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32),
                                  options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    except Exception as exc:  # noqa: BLE001 - reported
        return {**record, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[-400:]}"}
    ptx = compiled.asm["ptx"]
    return {**record, "ok": True, "seconds": round(time.monotonic() - t, 1), "shared": compiled.metadata.shared,
            "wgmma": ptx.count("wgmma.mma_async"), "tma": "cp.async.bulk.tensor" in ptx,
            "warp_specialized": "ttg.warp_specialize" in compiled.asm.get("ttgir", ""),
            **ptxas_report(ptx, capability)}


def matrix() -> list[tuple]:
    """Every head-dim-128 tuning candidate (Hopper paths included) for every partial kind."""
    out = []
    for cfg in tuning.candidates(128, 128, 128, tma=True, warp_spec=True):
        for kind in KINDS:
            out.append((f"{kind}/{cfg}", kind, kind == "full-only", False, 128, "bf16", cfg))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="variants to compile (default: all of the chosen set)")
    parser.add_argument("--matrix", action="store_true", help="every tuning candidate x every partial kind")
    parser.add_argument("--out", help="also write the records to this JSON file")
    parser.add_argument("--probe", action="store_true",
                        help="also print whether Triton warp-specialises the kernel on sm_90 and sm_100")
    args = parser.parse_args(argv)
    variants = matrix() if args.matrix else VARIANTS
    records = []
    for v in variants:
        if not args.names or v[0] in args.names:
            records.append(compile_variant(*v))
            print(json.dumps(records[-1]), flush=True)
    probes = {}
    if args.probe:
        probes = {f"sm_{cap}": tuning.compile_probe(cap) for cap in (90, 100)}
        print(json.dumps({"warp_spec_applies": probes}), flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"triton": triton.__version__, "target": "sm_90a",
                                                      "warp_spec_applies": probes, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
