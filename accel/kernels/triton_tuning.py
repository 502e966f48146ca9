"""Configuration choice for the Triton kernel: candidates, Hopper feature detection, persisted tuning.

A :class:`KernelConfig` is the kernel's program tile (``block_m x block_n``), its ``num_warps`` /
``num_stages``, and three switches: ``tma`` (K/V read through tensor descriptors), ``warp_spec``
(the clean-block loop warp-specialised; needs ``tma``) and ``persistent`` (one program per SM slot
looping over the tiles, longest rows first).

How a call gets its configuration (:func:`choose_config`):

1. ``ACCEL_TRITON_CONFIG`` forces one, e.g. ``block_m=64,block_n=32,num_warps=4,num_stages=3`` (keys
   ``block_m``, ``block_n``, ``num_warps``, ``num_stages``, ``tma``, ``warp_spec``, ``persistent``;
   unspecified switches are 0). It applies everywhere, the interpreter included (tests use it to run
   program tiles smaller than the layout's blocks).
2. Under ``TRITON_INTERPRET=1``: the layout's own blocks (capped at 128), no tuning.
3. A result tuned earlier for the same key: from memory, else from the cache file.
4. Otherwise the candidates of :func:`candidates` are run on the call's own inputs, each output is
   compared with the first (portable) candidate's -- a failing or mismatching candidate (a Hopper
   path the installed Triton miscompiles) is dropped -- and the fastest is kept, written to the cache
   file and logged (once per key and process). ``ACCEL_TRITON_TUNE_BUDGET_S`` (default 60) caps the
   time spent; ``ACCEL_TRITON_TUNE=0`` skips tuning (first candidate); during CUDA-graph capture no
   tuning happens either.

``ACCEL_TRITON_PORTABLE=1`` removes the Hopper paths (TMA, warp specialisation) from the candidates
and from forced configurations. Warp-specialised candidates are offered only where the installed Triton
actually partitions the kernel's loop (:func:`hopper_features` compiles a probe once; with Triton 3.9 that
is sm_100 but not sm_90, where the flag would compile the same code as plain TMA).

The cache file is JSON at ``ACCEL_TUNING_CACHE`` (default ``~/.cache/accel/triton_tuning.json``,
under ``XDG_CACHE_HOME`` when set). Its keys hold the GPU name and compute capability, the Triton
version, a digest of the kernel source and the :class:`TuningKey` (dtype, head dim, layout blocks,
layout class = partial kind + key padding + ragged/padded edge blocks, sequence-length bucket,
fusions). Clear it with :func:`clear_tuning_cache` or ``python -m accel.kernels.triton_tuning clear``
(``show`` lists the entries, ``path`` prints the file).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import logging
import os
import pathlib
import sys
import threading
import time
from collections.abc import Callable

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

__all__ = [
    "INTERPRET",
    "KernelConfig",
    "TuningKey",
    "cache_path",
    "candidates",
    "choose_config",
    "compile_probe",
    "chosen_configs",
    "clear_tuning_cache",
    "hopper_features",
    "layout_class",
    "parse_config",
]

logger = logging.getLogger(__name__)

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_DEFAULT_BUDGET_S = 60.0


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """One launch configuration of the kernel (see the module docstring)."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2
    tma: bool = False
    warp_spec: bool = False
    persistent: bool = False

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {v!r}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"num_warps must be 1, 2, 4, 8 or 16, got {self.num_warps!r}")
        if not isinstance(self.num_stages, int) or not 1 <= self.num_stages <= 8:
            raise ValueError(f"num_stages must be an int in [1, 8], got {self.num_stages!r}")
        if self.warp_spec and not self.tma:
            raise ValueError("warp_spec needs tma (Triton warp-specialises loops fed by tensor descriptors)")

    def portable(self) -> KernelConfig:
        """The same configuration without the Hopper paths."""
        return dataclasses.replace(self, tma=False, warp_spec=False)

    def programs(self, device: torch.device) -> int:
        """Number of programs of the persistent variant: two per multiprocessor."""
        if device.type != "cuda":
            return 4
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count

    def __str__(self) -> str:
        flags = "".join(f",{n}=1" for n in ("tma", "warp_spec", "persistent") if getattr(self, n))
        return (f"block_m={self.block_m},block_n={self.block_n},num_warps={self.num_warps},"
                f"num_stages={self.num_stages}{flags}")


def parse_config(text: str) -> KernelConfig:
    """Parse ``"block_m=64,block_n=32,num_warps=4,num_stages=3[,tma=1][,warp_spec=1][,persistent=1]"``."""
    fields = {f.name: f.type for f in dataclasses.fields(KernelConfig)}
    values: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ValueError(f"ACCEL_TRITON_CONFIG: {part!r} is not name=value with a name in {sorted(fields)}")
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"ACCEL_TRITON_CONFIG: {name} must be an int (0/1 for switches), got {raw!r}") from None
        values[name] = bool(value) if fields[name] in ("bool", bool) else value
    for name in ("block_m", "block_n"):
        if name not in values:
            raise ValueError(f"ACCEL_TRITON_CONFIG must give {name}, got {text!r}")
    return KernelConfig(**values)


@dataclasses.dataclass(frozen=True)
class TuningKey:
    """What a tuned configuration depends on, besides the GPU, Triton and the kernel source."""

    dtype: str
    head_dim: int
    q_block: int
    kv_block: int
    layout_class: str
    seq_bucket: int
    prior: bool
    affine: bool

    def __str__(self) -> str:
        return (f"{self.dtype}|d{self.head_dim}|q{self.q_block}k{self.kv_block}|{self.layout_class}|"
                f"seq2^{self.seq_bucket}|prior{int(self.prior)}|affine{int(self.affine)}")


def layout_class(part_kind_code: int, key_pad: bool, edge: bool) -> str:
    """The layout's class in the tuning key: partial kind, then ``+pad`` / ``+edge``."""
    name = ("full-only", "tiles", "window", "ellipsoid")[part_kind_code]
    return name + ("+pad" if key_pad else "") + ("+edge" if edge else "")


@functools.cache
def hopper_features(device_index: int) -> dict:
    """Which Hopper paths the installed Triton offers on this CUDA device: ``{"tma": bool, "warp_spec": bool}``.

    TMA needs compute capability >= 9.0, ``tl.make_tensor_descriptor`` and ``triton.set_allocator``.
    Warp specialisation needs TMA, the ``warp_specialize`` argument of ``tl.range``, and a compiler that
    actually partitions this kernel's loop: that is probed once by compiling the kernel for the
    device's capability (no launch) and looking for warp-specialised partitions in its IR; the verdict
    is kept in the tuning cache file. (Triton 3.9 on sm_90 leaves the loop unpartitioned: it
    specialises simple matmul loops on Hopper, attention-like loops on Blackwell.) Whether compiled
    code is right is checked when a path is tuned (outputs compared with the portable path).
    """
    if triton is None or not torch.cuda.is_available():
        return {"tma": False, "warp_spec": False}
    major, minor = torch.cuda.get_device_capability(device_index)
    tma = major >= 9 and hasattr(tl, "make_tensor_descriptor") and hasattr(triton, "set_allocator")
    import inspect

    ws = tma and "warp_specialize" in inspect.signature(tl.range.__init__).parameters
    if ws:
        ws = _warp_spec_applies(torch.device("cuda", device_index), 10 * major + minor)
    return {"tma": bool(tma), "warp_spec": bool(ws)}


def _warp_spec_applies(device: torch.device, capability: int) -> bool:
    """Does the installed Triton warp-specialise the kernel's main loop for ``capability``? (cached on disk)"""
    key = f"{_device_tag(device)}|triton {triton.__version__}|kernel {_kernel_hash()}|warp_spec_applies"
    known = _TUNER.read_probes().get(key)
    if isinstance(known, bool):
        return known
    verdict = compile_probe(capability)
    if verdict is not None:
        _TUNER.write_probe(key, verdict)
    logger.info("accel: warp specialisation of the kernel on sm_%d with Triton %s: %s", capability,
                triton.__version__, {True: "applied", False: "not applied (skipped)", None: "probe failed"}[verdict])
    return bool(verdict)


def compile_probe(capability: int) -> bool | None:
    """Compile the kernel with ``warp_spec`` for ``sm_<capability>`` (no GPU needed); True when the compiler
    produced warp-specialised partitions, False when it did not, None when it could not compile."""
    from .triton_fwd import _bsa_fwd_kernel, kernel_signature

    constexprs = dict(
        HEAD_DIM=128, BLOCK_D=128, Q_BLOCK=128, KV_BLOCK=128, BLOCK_M=128, BLOCK_N=128, UPCAST=False,
        DOT_PRECISION="tf32", HAS_PRIOR=False, HAS_AFFINE=False, PART_KIND=0, N_AXES=1, K_FREE=False,
        HAS_EDGE=False, HAS_KEYPAD=False, USE_TMA=True, WARP_SPEC=True, PERSISTENT=False,
    )
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        src = ASTSource(fn=_bsa_fwd_kernel, signature=kernel_signature("bf16"), constexprs=constexprs)
        compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32), options={"num_warps": 8, "num_stages": 2})
    except Exception as err:  # noqa: BLE001 - an unsupported path is not offered
        logger.info("accel: the warp-specialisation probe did not compile (%s)", type(err).__name__)
        return None
    return "ttg.warp_specialize" in compiled.asm.get("ttgir", "")


def _kernel_hash() -> str:
    from .triton_fwd import KERNEL_HASH

    return KERNEL_HASH


def _portable_forced() -> bool:
    return os.environ.get("ACCEL_TRITON_PORTABLE", "0") == "1"


def candidates(block_d: int, q_block: int, kv_block: int, *, tma: bool, warp_spec: bool) -> list[KernelConfig]:
    """The configurations tuning tries, best guess first (the first is also the untuned default).

    Program tiles never exceed the layout's blocks; head dims of 256 use smaller tiles. Hopper
    variants (``tma`` / ``warp_spec``) are added only when allowed.
    """
    if block_d >= 256:
        base = [KernelConfig(64, 32, 4, 2), KernelConfig(64, 64, 4, 2), KernelConfig(128, 32, 8, 2)]
    elif block_d >= 128:
        # ptxas on sm_90a (benchmarks/kernel_compile_sm90.py): these spill least among portable tiles
        base = [KernelConfig(128, 64, 8, 3), KernelConfig(128, 128, 8, 2), KernelConfig(64, 64, 4, 3),
                KernelConfig(64, 32, 4, 3)]
    else:
        base = [KernelConfig(128, 64, 4, 3), KernelConfig(128, 128, 8, 3), KernelConfig(64, 64, 4, 3),
                KernelConfig(128, 32, 4, 3)]
    extra = []
    if tma and block_d <= 128:
        # no spills with descriptors at these tiles (same source)
        extra += [KernelConfig(128, 128, 8, 2, tma=True), KernelConfig(128, 64, 8, 3, tma=True)]
        if warp_spec:
            extra += [KernelConfig(128, 128, 8, 2, tma=True, warp_spec=True),
                      KernelConfig(128, 64, 8, 2, tma=True, warp_spec=True)]
    fits = [c for c in base + extra if c.block_m <= q_block and c.block_n <= kv_block]
    if not fits:
        fits = [KernelConfig(min(q_block, 128), min(kv_block, 128), 4, 2)]
    return fits


def cache_path() -> pathlib.Path:
    """The tuning cache file (``ACCEL_TUNING_CACHE``, else ``$XDG_CACHE_HOME/accel/triton_tuning.json``,
    else ``~/.cache/accel/triton_tuning.json``)."""
    explicit = os.environ.get("ACCEL_TUNING_CACHE")
    if explicit:
        return pathlib.Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "accel" / "triton_tuning.json"


class _Tuner:
    """Process-wide memory of resolved configurations, backed by the cache file."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.memory: dict[str, dict] = {}
        self.logged: set[str] = set()

    def _read(self) -> dict:
        path = cache_path()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            logger.warning("accel: ignoring unreadable tuning cache %s (%s)", path, err)
            return {}
        return data if isinstance(data, dict) else {}

    def read_file(self) -> dict:
        """The tuned entries of the cache file."""
        return self._read().get("entries", {})

    def read_probes(self) -> dict:
        """The feature-probe verdicts of the cache file."""
        return self._read().get("probes", {})

    def _write(self, section: str, key: str, value) -> None:
        path = cache_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = self._read()
            data = {"version": 1, "entries": data.get("entries", {}), "probes": data.get("probes", {})}
            data[section][key] = value
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError as err:
            logger.warning("accel: could not write the tuning cache %s (%s); the result is kept in memory", path, err)

    def write_entry(self, key: str, entry: dict) -> None:
        self._write("entries", key, entry)

    def write_probe(self, key: str, verdict: bool) -> None:
        self._write("probes", key, verdict)

    def log_once(self, key: str, config: KernelConfig, how: str) -> None:
        if key not in self.logged:
            self.logged.add(key)
            logger.info("accel triton config for %s: %s (%s)", key, config, how)


_TUNER = _Tuner()


def _device_tag(device: torch.device) -> str:
    if device.type != "cuda":
        return f"{device.type}-interpreter"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name}|sm{props.major}{props.minor}"


def full_key(key: TuningKey, device: torch.device) -> str:
    """The cache-file key: GPU, Triton version, kernel digest and ``key``."""
    version = getattr(triton, "__version__", "none")
    return f"{_device_tag(device)}|triton {version}|kernel {_kernel_hash()}|{key}"


def chosen_configs() -> dict[str, dict]:
    """The configurations resolved in this process so far: ``{cache key: entry}`` (``entry["config"]``
    is the config string, ``entry["how"]`` forced / cached / tuned / default, plus timings when tuned)."""
    with _TUNER.lock:
        return {k: dict(v) for k, v in _TUNER.memory.items()}


def clear_tuning_cache() -> pathlib.Path:
    """Delete the tuning cache file and forget this process's resolved configurations; returns the path."""
    path = cache_path()
    with _TUNER.lock:
        _TUNER.memory.clear()
        _TUNER.logged.clear()
        path.unlink(missing_ok=True)
    return path


def ensure_tma_allocator(device: torch.device) -> None:
    """Device-side tensor descriptors need a scratch allocator (set once, on CUDA only)."""
    if device.type == "cuda":
        _set_allocator_once()


@functools.cache
def _set_allocator_once() -> None:
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device="cuda"))


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _time_ms(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10, rep=40, return_mode="median"))


def _agrees(got, want) -> bool:
    """Outputs of two configurations agree (same NaN/inf pattern, close values)."""
    (o1, l1), (o2, l2) = got, want
    if not torch.equal(torch.isfinite(l1), torch.isfinite(l2)) or not bool(torch.isfinite(o1).all()):
        return False
    tol = 1e-4 if o1.dtype == torch.float32 else 2e-2
    diff = (o1.float() - o2.float()).norm() / o2.float().norm().clamp_min(1e-6)
    fin = torch.isfinite(l2)
    lse_diff = (l1[fin] - l2[fin]).abs().max() if bool(fin.any()) else torch.zeros(())
    return bool(diff <= tol) and bool(lse_diff <= 10 * tol)


def choose_config(key: TuningKey, device: torch.device, run: Callable[[KernelConfig], tuple], *, block_d: int,
                  tma_possible: bool = True, timer: Callable[[Callable[[], object]], float] | None = None
                  ) -> KernelConfig:
    """The configuration for one kernel call (see the module docstring for the order of sources).

    Args:
        key: what the choice depends on.
        device: the inputs' device.
        run: launches the kernel with a configuration and returns ``(out, lse)``; tuning calls it on the
            call's own inputs.
        block_d: the kernel's padded head dim.
        tma_possible: the inputs allow tensor descriptors (alignment).
        timer: measures a callable in ms (default ``triton.testing.do_bench`` median; tests inject one).
    """
    portable = _portable_forced()
    forced = os.environ.get("ACCEL_TRITON_CONFIG")
    fkey = full_key(key, device)
    if forced:
        cfg = parse_config(forced)
        if portable and (cfg.tma or cfg.warp_spec):
            raise ValueError(f"ACCEL_TRITON_CONFIG={forced!r} asks for a Hopper path but ACCEL_TRITON_PORTABLE=1")
        if cfg.block_m > key.q_block or cfg.block_n > key.kv_block:
            raise ValueError(f"ACCEL_TRITON_CONFIG={forced!r}: block_m/block_n must not exceed the layout's "
                             f"q_block={key.q_block} / kv_block={key.kv_block}")
        if cfg.tma and device.type == "cuda" and not hopper_features(device.index or 0)["tma"]:
            raise ValueError(f"ACCEL_TRITON_CONFIG={forced!r} asks for tma=1, which this GPU / Triton does not offer "
                             "(compute capability >= 9.0 and tl.make_tensor_descriptor are needed)")
        _remember(fkey + " [forced]", cfg, "forced")
        return cfg
    if INTERPRET and timer is None:
        cfg = KernelConfig(min(key.q_block, 128), min(key.kv_block, 128), 4, 2)
        _remember(fkey, cfg, "interpreter")
        return cfg
    with _TUNER.lock:
        hit = _TUNER.memory.get(fkey)
    if hit is None:
        entry = _TUNER.read_file().get(fkey)
        if entry is not None:
            try:
                cfg = parse_config(entry["config"])
                if not (portable and cfg.tma):
                    _remember(fkey, cfg, "cached", entry)
                    return cfg
            except (KeyError, ValueError, TypeError):
                logger.warning("accel: ignoring a malformed tuning cache entry for %s", fkey)
    elif not (portable and parse_config(hit["config"]).tma):
        return parse_config(hit["config"])
    feats = hopper_features(device.index or 0) if device.type == "cuda" else {"tma": True, "warp_spec": True}
    allowed_tma = feats["tma"] and tma_possible and not portable
    cands = candidates(block_d, key.q_block, key.kv_block, tma=allowed_tma, warp_spec=allowed_tma and feats["warp_spec"])
    if os.environ.get("ACCEL_TRITON_TUNE", "1") == "0" or _capturing(device):
        cfg = cands[0]
        _remember(fkey, cfg, "default (tuning off)" if not _capturing(device) else "default (graph capture)")
        return cfg
    cfg, entry = _tune(cands, run, timer or _time_ms)
    _TUNER.write_entry(fkey, entry)
    _remember(fkey, cfg, "tuned", entry)
    return cfg


def _remember(fkey: str, cfg: KernelConfig, how: str, entry: dict | None = None) -> None:
    record = dict(entry or {})
    record.update(config=str(cfg), how=how)
    with _TUNER.lock:
        _TUNER.memory[fkey] = record
        _TUNER.log_once(fkey, cfg, how)


def _tune(cands: list[KernelConfig], run, timer) -> tuple[KernelConfig, dict]:
    budget = float(os.environ.get("ACCEL_TRITON_TUNE_BUDGET_S", _DEFAULT_BUDGET_S))
    t0 = time.monotonic()
    reference = None
    results = []
    best: tuple[float, KernelConfig] | None = None

    def attempt(cfg: KernelConfig) -> None:
        nonlocal reference, best
        try:
            got = run(cfg)
            got = (got[0].clone(), got[1].clone())
            if reference is None and not cfg.tma:
                reference = got
            elif reference is not None and not _agrees(got, reference):
                results.append([str(cfg), None, "output differs from the portable path: dropped"])
                logger.warning("accel: triton config %s gives a different result than %s; dropped", cfg,
                               results[0][0] if results else "the reference")
                return
            ms = timer(lambda: run(cfg))
        except Exception as err:  # noqa: BLE001 - a candidate that cannot compile or launch is skipped
            results.append([str(cfg), None, f"failed: {type(err).__name__}: {str(err)[:200]}"])
            logger.info("accel: triton config %s failed (%s); skipped", cfg, type(err).__name__)
            return
        results.append([str(cfg), ms, "ok"])
        if best is None or ms < best[0]:
            best = (ms, cfg)

    for cfg in cands:
        if best is not None and time.monotonic() - t0 > budget:
            results.append([str(cfg), None, "skipped: tuning budget spent"])
            continue
        attempt(cfg)
    if best is not None and time.monotonic() - t0 <= budget:
        attempt(dataclasses.replace(best[1], persistent=True))
    if best is None:
        raise RuntimeError(f"accel: no triton configuration could run: {results}")
    entry = {"config": str(best[1]), "ms": best[0], "candidates": results, "tune_s": round(time.monotonic() - t0, 2),
             "tuned_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return best[1], entry


def main(argv: list[str] | None = None) -> int:
    """``python -m accel.kernels.triton_tuning {path,show,clear}``."""
    parser = argparse.ArgumentParser(prog="python -m accel.kernels.triton_tuning",
                                     description="Inspect or clear the Triton kernel's tuning cache.")
    parser.add_argument("action", choices=("path", "show", "clear"))
    args = parser.parse_args(argv)
    if args.action == "path":
        print(cache_path())
    elif args.action == "show":
        entries = _TUNER.read_file()
        print(f"{cache_path()}: {len(entries)} entries, {len(_TUNER.read_probes())} feature probes")
        for k in sorted(entries):
            e = entries[k]
            print(f"{k}\n    {e.get('config')}  {e.get('ms', float('nan')):.3f} ms  (tuned {e.get('tuned_at', '?')})")
    else:
        print(f"removed {clear_tuning_cache()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
