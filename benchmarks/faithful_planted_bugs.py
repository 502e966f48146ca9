"""Do the release-rule tests of issue 19 catch bugs? Plant each bug, run the tests, record which fail.

Each *planted bug* below replaces one exact snippet of the library by a plausible wrong rule (the
deviations from the releases that issue 19 found, off-by-one roundings, swapped order, a dropped
term). The repository's tracked and untracked files are copied to a temporary folder (the worktree is
never edited); per bug the snippet is replaced there (it must occur exactly once, else the harness is
stale and the run stops), the bug's tests run (``pytest -x``, so the first failing test is the one
named), and the file is restored. A run without any bug comes first and must pass.

A bug is *caught* when pytest fails. A bug marked ``equivalent`` is expected to survive: it does not
change what is computed on the tests' inputs (e.g. a strict vs non-strict comparison of continuous
random values, a scale that the min-max normalisation removes); it is listed to show that the
harness does not count those as misses.

Run ``python benchmarks/faithful_planted_bugs.py`` (``--list`` lists the bugs); it writes
``benchmarks/results/faithful_planted_bugs.json`` (``--out``). ``--only ID ...`` plants those bugs only
and replaces their records in an existing output (each with its command and commit; ``reruns`` lists
the partial runs). About 20-40 minutes on a busy
2-core machine (the test collection imports torch and diffusers for every bug).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RADIAL = ("tests/patterns/test_radial_release.py", "-k", "not scripts")
RADIAL_SCRIPTS = ("tests/patterns/test_radial_release.py", "-k", "scripts")
RECTIFIED = ("tests/methods/test_rectified_release.py",)
AGENT = ("tests/methods/test_agent_release.py", "-k", "not apply_tiny and not root_hook")
CONSISTEDIT = ("tests/control/test_consistedit_release.py",)


@dataclasses.dataclass(frozen=True)
class Bug:
    id: str
    path: str
    old: str
    new: str
    what: str
    tests: tuple[str, ...]
    equivalent: str = ""   # why it cannot change the tests' outcome, for bugs expected to survive


BUGS = [
    # ---------------------------------------------------------------- Radial (mit-han-lab/radial-attention)
    Bug("radial-thinning-decayed", "accel/patterns/radial.py",
        "        if not _keeps_distance(d, s):\n",
        "        if not _keeps_distance(d, max(1, math.floor(s * dec))):\n",
        "diagonal thinning on the decayed width (accel's rule before issue 19)", RADIAL),
    Bug("radial-no-block-floor", "accel/patterns/radial.py",
        "width = max(dec * p / (1 << d.bit_length()), Fraction(block_size))",
        "width = dec * p / (1 << d.bit_length())",
        "window half-width not floored at block_size", RADIAL),
    Bug("radial-adjacent-never-thinned", "accel/patterns/radial.py",
        "        if not _keeps_distance(d, s):\n",
        "        if d > 1 and not _keeps_distance(d, s):\n",
        "frame distances 0 and 1 always dense (the release thins d = 1 when a frame has < 128 tokens)", RADIAL),
    Bug("radial-threshold-64", "accel/patterns/radial.py",
        "THINNING_THRESHOLD = 128\n", "THINNING_THRESHOLD = 64\n",
        "thinning threshold 64 instead of the release's fixed 128", RADIAL),
    Bug("radial-column-half", "accel/patterns/radial.py",
        "dense = (3 * count > b).sum(-1)", "dense = (2 * count > b).sum(-1)",
        "block selection: a column is dense above 1/2 of the rows instead of 1/3", RADIAL),
    Bug("radial-share-half", "accel/patterns/radial.py",
        "return 5 * dense > 3 * nonempty", "return 2 * dense > nonempty",
        "block selection: more than 50% dense columns instead of 60%", RADIAL),
    Bug("radial-share-not-strict", "accel/patterns/radial.py",
        "return 5 * dense > 3 * nonempty", "return 5 * dense >= 3 * nonempty",
        "block selection: >= 60% instead of the release's strict > 60%", RADIAL),
    Bug("radial-partial-block-sparse", "accel/patterns/radial.py",
        "    if n % b:\n        out[n // b:, :] = True", "    if False:\n        out[n // b:, :] = True",
        "the last partial block row/column not made dense", RADIAL),
    Bug("radial-block-map-no-sink", "accel/patterns/radial.py",
        "width = s if rule.sink and j == 0 else hw[abs(i - j)]", "width = hw[abs(i - j)]",
        "block selection ignores the sink frame", RADIAL),
    Bug("radial-sink-frame-1", "accel/patterns/radial.py",
        "ok = ok | (kc[..., 0] == 0)", "ok = ok | (kc[..., 0] == 1)",
        "token rule: the sink is frame 1 instead of frame 0", RADIAL),
    Bug("radial-pairs-one-side", "accel/patterns/radial.py",
        "sum(2 * (t - d) * band[d]", "sum((t - d) * band[d]",
        "allowed_pairs counts each frame distance once instead of both directions", RADIAL),
    Bug("radial-threshold-64-scripts", "accel/patterns/radial.py",
        "THINNING_THRESHOLD = 128\n", "THINNING_THRESHOLD = 64\n",
        "thinning threshold 64, checked by the release scripts' sparsity only (71.3% / 72.5%)", RADIAL_SCRIPTS,
        equivalent="at the scripts' sizes (3,840 tokens per frame, P = 4096, at most 30 frames) the undecayed width "
                   "P / 2**g is >= 128 at every distance, so no threshold <= 128 thins anything there"),
    # ---------------------------------------------------------------- Rectified SpaAttn (BienLuky/Rectified-SpaAttn)
    Bug("rectified-text-not-counted", "accel/methods/rectified.py",
        "columns = torch.cat([p_hat, p_text[..., None]], -1) if self.count_text and tokens.text_len else p_hat",
        "columns = p_hat",
        "the text column not sorted with the video blocks (accel's rule before issue 19)", RECTIFIED),
    Bug("rectified-top-k-ceil", "accel/methods/rectified.py",
        "return int((1 - drop) * num_blocks)", "return math.ceil(round((1 - drop) * num_blocks, 9))",
        "top-k rounded up (accel's rule before issue 19) instead of truncated", RECTIFIED),
    Bug("rectified-own-block", "accel/methods/rectified.py",
        "        if self.keep_own_block:\n", "        if True:\n",
        "the own block always selected (the release has it only through the neighbour list)", RECTIFIED),
    Bug("rectified-no-neighbours", "accel/methods/rectified.py",
        "            selected |= near\n", "            selected = selected\n",
        "curve neighbours not added", RECTIFIED),
    Bug("rectified-face-neighbours", "accel/methods/rectified.py",
        "                adjacent[(src * nb + dst).reshape(-1)] = True",
        "                adjacent[(src * nb + dst).reshape(-1)] = abs(dt) + abs(dy) + abs(dx) <= 1",
        "6 face neighbours instead of the 26-neighbourhood", RECTIFIED),
    Bug("rectified-first-blocks-ceil", "accel/methods/rectified.py",
        "first = nb // tokens.grid[0]", "first = -(-nb // tokens.grid[0])",
        "Wan's dense first blocks: ceil(NB / T) instead of floor", RECTIFIED),
    Bug("rectified-exact-pooling", "accel/methods/rectified.py",
        'padded = self.pooling == "padded"', "padded = False",
        "a ragged last block pooled over its real tokens (accel's rule before issue 19)", RECTIFIED),
    Bug("rectified-gapr-half", "accel/methods/rectified.py",
        "compensated &= gain > noise", "compensated &= gain > 0.5 * noise",
        "GAPR test with half the noise bound", RECTIFIED),
    Bug("rectified-tau-strict", "accel/methods/rectified.py",
        "(cum <= self.tau)", "(cum < self.tau)",
        "cumulative threshold strict", RECTIFIED,
        equivalent="a cumulative sum of softmax values equals tau with probability 0 (tau = 0 counts nothing "
                   "either way)"),
    Bug("rectified-hilbert-axes", "accel/patterns/curves.py",
        'def hilbert_order(grid: tuple[int, int, int], axis_order: tuple[str, str, str] = ("w", "h", "t"),',
        'def hilbert_order(grid: tuple[int, int, int], axis_order: tuple[str, str, str] = ("h", "w", "t"),',
        "curve axis order (h, w, t) instead of the release's (w, h, t)", RECTIFIED),
    # ---------------------------------------------------------------- AgentSD (LeapLabTHU/Agent-Attention)
    Bug("agent-destinations-bottom-right", "accel/methods/tome.py",
        "dst[:, : (h // sy) * sy: sy, : (w // sx) * sx: sx] = True",
        "dst[:, sy - 1: (h // sy) * sy: sy, sx - 1: (w // sx) * sx: sx] = True",
        "destinations the bottom-right token of each region instead of the top-left", AGENT),
    Bug("agent-rank-ascending", "accel/methods/tome.py",
        "order = torch.sort(sim, descending=True, stable=True).indices",
        "order = torch.sort(sim, descending=False, stable=True).indices",
        "the least similar sources merged first", AGENT),
    Bug("agent-dot-similarity", "accel/methods/tome.py",
        "    m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)\n", "    m = m\n",
        "dot product instead of cosine similarity", AGENT),
    Bug("agent-fallback-at-n", "accel/methods/agent.py",
        "        if 2 * na >= m:\n", "        if na >= m:\n",
        "fallback to ordinary attention only when agents >= merged tokens (release: >= half)", AGENT),
    Bug("agent-one-more-merged", "accel/methods/agent.py",
        "r, agent_r = int(n * self.ratio), int(n * agent_ratio)",
        "r, agent_r = int(n * self.ratio), int(n * agent_ratio) + 1",
        "one source more merged into the agents", AGENT),
    Bug("agent-broadcast-scale", "accel/methods/agent.py",
        "om = block_sparse_attention(qm, agents, v_agents, bcast, scale=s ** self.k_scale2",
        "om = block_sparse_attention(qm, agents, v_agents, bcast, scale=s",
        "broadcast softmax at scale s instead of s ** k_scale2", AGENT),
    Bug("agent-shortcut-half", "accel/methods/agent.py",
        "om = (om.float() + self.k_shortcut * vm.float())", "om = (om.float() + 0.5 * self.k_shortcut * vm.float())",
        "value shortcut at half its weight", AGENT),
    Bug("agent-no-late-phase", "accel/methods/agent.py",
        "            return self.late_stride, self.late_agent_ratio\n",
        "            return self.stride, self.agent_ratio\n",
        "no late phase (AgentSD switches to 2x2 / 0.5 at 40% of the steps)", AGENT),
    Bug("agent-metric-keys", "accel/methods/agent.py",
        "metric = _all_heads(v[:, tokens.video_slice]", "metric = _all_heads(k[:, tokens.video_slice]",
        "similarity metric from the keys instead of the values (accel's stand-in for the hidden states)",
        ("tests/methods/test_agent_release.py", "-k", "not apply_tiny and not root_hook")),
    # ---------------------------------------------------------------- ConsistEdit (zxYin/ConsistEdit_Code)
    Bug("consistedit-text-softmax-on-flux", "accel/control/mask.py",
        'return "joint" if family == "flux" else "text"', 'return "text"',
        "FLUX mask from a text-only softmax (accel's rule before issue 19)", CONSISTEDIT),
    Bug("consistedit-mask-every-layer", "accel/control/mask.py",
        'default_layers = {"flux": r"^single_transformer_blocks\\.",', 'default_layers = {"flux": None,',
        "FLUX mask observed in every layer instead of the single-stream blocks", CONSISTEDIT),
    Bug("consistedit-padded-text-in-softmax", "accel/control/mask.py",
        "bias.masked_fill_(~key_valid[:, None, None, :], float(\"-inf\"))",
        "bias.masked_fill_(torch.zeros_like(key_valid)[:, None, None, :], float(\"-inf\"))",
        "padded text keys left in the softmax", CONSISTEDIT),
    Bug("consistedit-flux-padding-left-out", "accel/editing/pipeline.py",
        '    if family == "flux":\n        # FLUX attends', '    if False:\n        # FLUX attends',
        "FLUX's padded T5 keys left out of the mask softmax (accel's rule before this test; the release and "
        "FLUX attend all of them)", CONSISTEDIT),
    Bug("consistedit-heads-summed", "accel/control/mask.py",
        "heat = (total / h).mean(0)", "heat = total.mean(0)",
        "heads summed instead of averaged", CONSISTEDIT,
        equivalent="a common scale of the map is removed by the per-frame min-max normalisation (up to the 1e-6)"),
    Bug("consistedit-normalise-no-eps", "accel/control/mask.py",
        "((flat - lo) / (hi - lo + 1e-6))", "((flat - lo) / (hi - lo).clamp_min(1e-12))",
        "min-max normalisation without the release's + 1e-6", CONSISTEDIT),
    Bug("consistedit-lock-floor-eps", "accel/control/consistedit.py",
        "return int(num_steps * self.alpha)", "return math.floor(num_steps * self.alpha + 1e-9)",
        "lock steps floor(T*alpha + 1e-9) (accel's rule before issue 19) instead of int(T*alpha)", CONSISTEDIT),
    Bug("consistedit-words-case-insensitive", "accel/control/mask.py",
        "start = prompt.find(word)", "start = prompt.lower().find(word.lower())",
        "edit word matched case-insensitively (the release: first case-sensitive substring)",
        CONSISTEDIT + ("tests/control/test_token_positions.py",)),
    Bug("consistedit-qk-pairing", "accel/control/replay.py",
        "step = self.num_steps - 1 - call.step", "step = call.step",
        "recorded Q/K of inversion call c replayed at step c instead of T - 1 - c", CONSISTEDIT),
    Bug("consistedit-uniinv-no-redo", "accel/editing/inversion.py",
        "committed = self._committed + (s_to - s_from) * v", "committed = sample.to(torch.float32)",
        "UniInv without redoing the last step with its end velocity (plain Euler)", CONSISTEDIT),
    Bug("consistedit-target-rows-replayed", "accel/control/replay.py",
        "            rows = x[0::2, vs]\n            x[0::2, vs] =", "            rows = x[1::2, vs]\n            x[1::2, vs] =",
        "the recorded source Q/K written into the target rows", CONSISTEDIT),
]


def copy_tree(dest: Path) -> None:
    """The worktree's tracked and untracked (not ignored) files, copied under ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-rf", *tests]
    t0 = time.time()
    try:
        res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "seconds": time.time() - t0}
    failed = [line.split(" ", 2)[1] for line in res.stdout.splitlines() if line.startswith("FAILED ")]
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-300:]
    return {"outcome": "passed" if res.returncode == 0 else "failed", "returncode": res.returncode,
            "first_failure": failed[0] if failed else None, "summary": summary, "seconds": time.time() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faithful_planted_bugs.json"))
    p.add_argument("--only", nargs="+", default=None, help="bug ids to plant (default: all)")
    p.add_argument("--list", action="store_true", help="list the bugs (and check their snippets) and exit")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per pytest run")
    a = p.parse_args(argv)
    if a.list:
        for bug in BUGS:
            count = (ROOT / bug.path).read_text().count(bug.old)
            print(f"{bug.id}: {bug.what} [{' '.join(bug.tests)}]" + ("" if count == 1 else f"  SNIPPET FOUND {count}x"))
        return 0
    bugs = BUGS if not a.only else [b for b in BUGS if b.id in a.only]
    unknown = set(a.only or ()) - {b.id for b in BUGS}
    if unknown:
        p.error(f"unknown bug ids: {sorted(unknown)}")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    command = "python benchmarks/faithful_planted_bugs.py" + (" --only " + " ".join(a.only) if a.only else "")
    result = {"what": "planted bugs vs the release-rule tests of issue 19", "command": command, "commit": head,
              "load_avg_1min_start": os.getloadavg()[0], "bugs": []}
    with tempfile.TemporaryDirectory(prefix="accel-planted-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for bug in bugs:  # every snippet must be found exactly once before anything runs
            count = (tree / bug.path).read_text().count(bug.old)
            if count != 1:
                raise SystemExit(f"{bug.id}: the snippet occurs {count} times in {bug.path} (expected once): update it")
        result["baseline"] = []
        for tests in dict.fromkeys(b.tests for b in bugs):  # each selection passes without a bug
            base = {"tests": " ".join(tests), **run_tests(tree, tests, a.timeout)}
            result["baseline"].append(base)
            print(json.dumps({"baseline": base}), flush=True)
            if base["outcome"] != "passed":
                raise SystemExit(f"{base['tests']} fails without any planted bug: fix it first")
        for bug in bugs:
            path = tree / bug.path
            original = path.read_text()
            path.write_text(original.replace(bug.old, bug.new))
            try:
                rec = run_tests(tree, bug.tests, a.timeout)
            finally:
                path.write_text(original)
            caught = rec["outcome"] == "failed"
            rec = {"id": bug.id, "file": bug.path, "bug": bug.what, "tests": " ".join(bug.tests), "caught": caught,
                   "expected_to_survive": bug.equivalent or None, **rec}
            print(json.dumps(rec), flush=True)
            result["bugs"].append(rec)
    out = Path(a.out)
    if a.only and out.exists():  # replace these bugs' records in the earlier run, keep the others
        earlier = json.loads(out.read_text())
        fresh = {r["id"]: r for r in result["bugs"]}
        for r in result["bugs"]:
            r["command"], r["commit"] = command, head
        merged = [fresh.pop(r["id"], r) for r in earlier["bugs"]] + list(fresh.values())
        result = {**earlier, "bugs": merged, "reruns": earlier.get("reruns", []) + [
            {"command": command, "commit": head, "baseline": result["baseline"],
             "load_avg_1min_start": result["load_avg_1min_start"]}]}
    real = [r for r in result["bugs"] if not r["expected_to_survive"]]
    result["summary"] = {"planted": len(real), "caught": sum(r["caught"] for r in real),
                         "missed": [r["id"] for r in real if not r["caught"]],
                         "equivalent_survived": [r["id"] for r in result["bugs"]
                                                 if r["expected_to_survive"] and not r["caught"]]}
    result["load_avg_1min_end"] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
