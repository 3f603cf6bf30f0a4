"""results.json -> results.md (Markdown tables with ratios) and PNG plots, in the same folder.

python -m bench.report bench/results/results.json      # re-render without re-running
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

GEN_PATHS = ("transformers", "vllm_bare", "vllm_bare_1thread", "rlaif_engine", "rlaif_rollout_actor")
PPO_PHASES = ("generation", "scoring", "learner_forward", "training", "sync")


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 10 else f"{x:,.{digits}f}"
    return str(x)


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}×" if a and b else "—"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return [*lines, ""]


def _status(r: dict[str, Any]) -> str | None:
    if "skipped" in r:
        return f"_skipped: {r['skipped']}_"
    if "error" in r:
        return f"_failed: {r['error']}_ (see logs/)"
    return None


def write_report(results_path: Path) -> None:
    doc = json.loads(results_path.read_text())
    out = results_path.parent
    b = doc.get("benchmarks", {})
    m = doc.get("machine", {})
    md = [
        "# rlaif benchmarks",
        "",
        f"- date: {doc.get('date')}; command: `{doc.get('command')}`; total {_f(doc.get('total_wall_s'), 0)} s",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB"
        + (f"; GPU {m.get('gpu')} ({m.get('gpu_memory_gib')} GiB)" if m.get("gpu") else ""),
        f"- load average at start (1/5/15 min): {m.get('load_average_start')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v),
        f"- settings: `{json.dumps(doc.get('settings'))}`",
        "- every figure is a median over the repeats; ratios are rlaif / baseline unless stated (> 1: rlaif ahead).",
        "",
    ]
    md += _roofline(b.get("roofline", {}))
    md += _generation(b.get("generation", {}), b.get("roofline", {}), out)
    md += _judge(b.get("judge", {}))
    md += _reward(b.get("reward", {}))
    md += _ppo(b.get("ppo", {}), out)
    md += _estimators(b.get("estimators", {}))
    md += _grpo(b.get("grpo", {}))
    md += _sync(b.get("sync", {}), out)
    md += _gpu_status()
    md += ["## Durations", ""]
    md += _table(
        ["benchmark", "wall s", "load average after (1/5/15)"],
        [[k, v.get("wall_s"), str(v.get("load_average_after"))] for k, v in b.items()],
    )
    (out / "results.md").write_text("\n".join(md) + "\n")


def _gpu_status() -> list[str]:
    """Which of rlaif's paths the GPU figures cover, and which have never run on a GPU (README, same list)."""
    return [
        "## On a GPU",
        "",
        "The figures above are CPU figures. On a GPU only the roofline, transformers generation and the copy "
        "floor have run (one H100, bf16, torch 2.11 and transformers 5.17, without vLLM, Ray or DeepSpeed: "
        "[gpu/results.md](gpu/results.md)). These rlaif paths have never run on a GPU, so none of their GPU "
        "figures exist: the vLLM GPU engine (`engine=vllm-gpu`) behind the rollout actor, the judge and the "
        "scorer; the NCCL weight sync; colocated sleep/wake (`ppo.placement=colocated`); the DeepSpeed learner "
        "and reward trainer in bf16; and so the PPO, GRPO, reward-model and estimator comparisons.",
        "",
    ]


def _roofline(r: dict[str, Any]) -> list[str]:
    md = ["## Machine limits (roofline)", ""]
    if not r or _status(r):
        return [*md, _status(r) or "_not run_", ""]
    mm, bw = r["matmul"], r["bandwidth"]
    md += _table(
        ["quantity", "value", "how"],
        [
            [
                "peak matmul",
                f"{mm['flops_per_s'] / 1e9:,.0f} GFLOP/s",
                f"torch.mm {mm['n']}² {mm['dtype']}"
                + (f", {mm['threads']} threads" if mm["dtype"] == "float32" else ""),
            ],
            [
                "memory bandwidth",
                f"{bw['bytes_per_s'] / 1e9:,.1f} GB/s",
                f"copy_ of {bw['bytes_per_copy'] >> 20} MiB, read + write",
            ],
        ],
    )
    md += [
        "Decoding model: a step at batch b reads every weight once (W bytes) and does b·2·params FLOPs, so "
        "tokens/s ≤ b / max(b·2·params / peak FLOP/s, W / bandwidth) (attention over ≤ 128 tokens adds < 2%). "
        "A generation call first prefills its b prompts of P tokens, max(b·P·2·params / peak FLOP/s, W / bandwidth), "
        "so the ceiling of its generated tokens/s over N new tokens is b·N / (prefill + N·b / step ceiling); "
        "the generation table's ceiling and percentages use that.",
        "",
    ]
    return md


def _ceiling(gen: dict[str, Any], roof: dict[str, Any], batch: int) -> float | None:
    if not roof or "matmul" not in roof:
        return None
    from bench.roofline import generation_ceiling

    return generation_ceiling(
        batch,
        gen["prompt_tokens_mean"],
        gen["max_new_tokens"],
        gen["params"],
        gen["weight_bytes"],
        roof["matmul"]["flops_per_s"],
        roof["bandwidth"]["bytes_per_s"],
    )


def _generation(r: dict[str, Any], roof: dict[str, Any], out: Path) -> list[str]:
    md = ["## 1. Generation (tokens/s)", ""]
    if not r or _status(r):
        return [*md, _status(r) or "_not run_", ""]
    rates = r["tokens_per_s"]
    paths = [p for p in GEN_PATHS if p in rates]
    md.append(
        f"Model {r['model']} ({r['params'] / 1e6:.0f} M params), {r['max_new_tokens']} new tokens per prompt "
        f"(EOS ignored), prompts of {r['prompt_tokens_mean']:.0f} tokens on average, temperature 1. "
        "The rollout actor / bare vLLM ratio is the median of per-repeat ratios (calls interleaved). "
        "rlaif_engine is `VLLMEngine.generate` on bare vLLM's own `LLM` object, so it is no comparison: "
        "its column gives the wrapper's overhead (rendering, tokenising, result conversion), the extra "
        "time per token against bare vLLM on that object (negative: within the noise)."
    )
    md.append("")
    header = [
        "batch",
        *paths,
        "rlaif actor / bare vLLM",
        "bare vLLM / transformers",
        "roofline ceiling",
        "transformers % of ceiling",
        "bare vLLM % of ceiling",
        "rlaif actor % of ceiling",
        "engine wrapper overhead",
    ]
    rows = []
    # Older results files have no paired ratio: then the ratio of the medians.
    meta = r.get("vllm") or {}
    paired = meta.get("rlaif_engine_over_bare_paired", {})
    paired_actor = {b: f"{x:.2f}×" for b, x in meta.get("rlaif_actor_over_bare_paired", {}).items()}
    for bs in r["batch_sizes"]:
        k = str(bs)
        v = {p: rates[p].get(k) for p in paths}
        ceil = _ceiling(r, roof, bs)
        engine = paired.get(k) or (
            v["rlaif_engine"] / v["vllm_bare"] if v.get("rlaif_engine") and v.get("vllm_bare") else None
        )
        actor = v.get("rlaif_rollout_actor")
        rows.append(
            [
                bs,
                *[v[p] for p in paths],
                paired_actor.get(k) or _ratio(actor, v.get("vllm_bare")),
                _ratio(v.get("vllm_bare"), v.get("transformers")),
                ceil,
                f"{100 * v['transformers'] / ceil:.1f}%" if ceil and v.get("transformers") else "—",
                f"{100 * v['vllm_bare'] / ceil:.0f}%" if ceil and v.get("vllm_bare") else "—",
                f"{100 * actor / ceil:.0f}%" if ceil and actor else "—",
                f"{100 * (1 / engine - 1):+.0f}%" if engine else "—",
            ]
        )
    md += _table(header, rows)
    for p, why in (r.get("skipped_paths") or {}).items():
        md.append(f"- {p}: skipped ({why})")
    md += ["", "![throughput vs batch](generation.png)", ""]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for p in paths:
            xs = [x for x in r["batch_sizes"] if rates[p].get(str(x)) is not None]
            label = "rlaif_engine (vllm_bare's LLM + wrapper)" if p == "rlaif_engine" else p
            ax.plot(xs, [rates[p][str(x)] for x in xs], marker="o", label=label)
        if roof and "matmul" in roof:
            ax.plot(r["batch_sizes"], [_ceiling(r, roof, x) for x in r["batch_sizes"]], "k--", label="roofline ceiling")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("generated tokens/s")
        ax.set_title(f"Generation, {r['model']}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "generation.png", dpi=110)
        plt.close(fig)
    except ImportError:
        md.append("_(matplotlib missing: no plot)_")
    return md


def _judge(r: dict[str, Any]) -> list[str]:
    md = ["## 2. Judge labelling", ""]
    if not r or _status(r):
        return [*md, _status(r) or "_not run_", ""]
    md.append(
        f"{r['comparisons']} comparisons ({r['questions']} questions, both orders), "
        f"{r['mean_prompt_tokens']:.0f} prompt tokens each on average."
    )
    md.append("")
    md += _table(
        ["judge", "comparisons/s", "prompt tokens/s", "seconds"],
        [
            [
                "rlaif (prefix cache, single-pass option scoring)",
                r["rlaif"]["comparisons_per_s"],
                r["rlaif"]["prompt_tokens_per_s"],
                r["rlaif"]["seconds"],
            ],
            [
                "naive (generate ≤ 16 tokens, parse A/B)",
                r["naive"]["comparisons_per_s"],
                r["naive"]["prompt_tokens_per_s"],
                r["naive"]["seconds"],
            ],
            *(
                [
                    [
                        "naive, no prefix sharing",
                        r["naive_no_prefix_cache"]["comparisons_per_s"],
                        r["naive_no_prefix_cache"]["prompt_tokens_per_s"],
                        r["naive_no_prefix_cache"]["seconds"],
                    ]
                ]
                if "naive_no_prefix_cache" in r
                else []
            ),
            ["speed-up rlaif vs naive", f"{r['speedup']:.2f}×", "", ""],
            *(
                [["speed-up rlaif vs naive without prefix sharing", f"{r['speedup_vs_no_prefix_cache']:.2f}×", "", ""]]
                if "speedup_vs_no_prefix_cache" in r
                else []
            ),
        ],
    )
    return md


def _reward(r: dict[str, Any]) -> list[str]:
    md = ["## 3. Reward-model training", ""]
    if not r or _status(r):
        return [*md, _status(r) or "_not run_", ""]
    md += [r.get("setup", ""), ""]
    if "runs" not in r:  # results from before the repeated, like-for-like runs
        rows = []
        for side in ("rlaif", "trl"):
            v = r.get(side, {})
            rows.append([side, _status(v) or v.get("samples_per_s"), v.get("step_s_median"), v.get("final_loss")])
        md += _table(["trainer", "pairs/s", "s/step (median)", "last loss"], rows)
        rlaif, trl = r.get("rlaif", {}).get("samples_per_s"), r.get("trl", {}).get("samples_per_s")
        return [*md, f"rlaif / TRL: **{_ratio(rlaif, trl)}**", ""]
    md += [f"Clock: {r['clock']}.", ""]
    soft = r.get("rlaif_soft", {})
    labels = "–".join(f"{p:g}" for p in (min(r["soft_labels"]), max(r["soft_labels"])))
    rows = []
    for name, how, v in (
        ("rlaif", "hard (first preferred, p = 1)", r["rlaif"]),
        ("TRL RewardTrainer", "hard (chosen over rejected)", r["trl"]),
        ("rlaif", f"soft (p = {labels}), one run, not compared", soft),
    ):
        rows.append(
            [
                name,
                how,
                _status(v) or v.get("samples_per_s"),
                v.get("step_s_median"),
                v.get("first_loss"),
                v.get("final_loss"),
            ]
        )
    md += _table(["trainer", "labels", "pairs/s (median of runs)", "s/step (median)", "first loss", "last loss"], rows)
    runs = [
        [i + 1, x["first"], _side_rate(x["rlaif"]), _side_rate(x["trl"]), f"{x['ratio']:.2f}×" if "ratio" in x else "—"]
        for i, x in enumerate(r["runs"])
    ]
    md += _table(["run", "went first", "rlaif pairs/s", "TRL pairs/s", "rlaif / TRL"], runs)
    if "ratio_rlaif_over_trl" in r:
        pairs = sum("ratio" in x for x in r["runs"])
        md += [
            f"rlaif / TRL over {pairs} pairs of runs: min {r['ratio_min']:.2f}×, "
            f"**median {r['ratio_rlaif_over_trl']:.2f}×**, max {r['ratio_max']:.2f}×",
            "",
        ]
    inner = {k: r[k].get("inner_step_s_median") for k in ("rlaif", "trl")}
    if all(inner.values()):
        md.append(
            f"- the trainers' own step timers (rlaif's `step_time_s`, TRL's on_step_begin → on_step_end) give "
            f"{inner['rlaif']:.3g} and {inner['trl']:.3g} s per step; the table's clock also counts what lies "
            "between steps"
        )
    return [*md, ""]


def _side_rate(v: dict[str, Any]) -> Any:
    return _status(v) or v.get("samples_per_s")


def _ppo(r: dict[str, Any], out: Path) -> list[str]:
    md = ["## 4. PPO iteration", ""]
    if not r or _status(r):
        return [*md, _status(r) or "_not run_", ""]
    if "settings" not in r:
        return [*md, "_results from an older format: rerun `python -m bench --only ppo`_", ""]
    md += [r.get("setup", ""), ""]
    n_warm = r.get("warmup_iterations") or 0
    steady = f"median wall s per iteration after {n_warm} warm-up" if n_warm else "median wall s per iteration"
    for key, setting in r["settings"].items():
        md += [f"### {setting['label']}" + (": the headline" if key == r.get("headline") else ""), ""]
        runs = setting["runs"]
        rows = [
            [
                f"run {run['run'] + 1} ({run['first']} first)",
                run["rlaif"]["iteration_s"],
                run["trl"]["iteration_s"],
                f"{run['ratio_trl_over_rlaif']:.2f}×",
                ", ".join(f"{x:.1f}" for x in run["rlaif"].get("warmup_iteration_s", [])) or "—",
                ", ".join(f"{x:.1f}" for x in run["trl"].get("warmup_iteration_s", [])) or "—",
                _shares(run["rlaif"]),
                _shares(run["trl"]),
                "yes" if run.get("same_prompt_rows") else "**no**",
            ]
            for run in runs
        ]
        for stat, pick in (("min", min), ("median", _median), ("max", max)):
            ratio = f"{setting[f'ratio_{stat}']:.2f}×"
            rows.append(
                [
                    f"**{stat}**" if stat == "median" else stat,
                    pick([run["rlaif"]["iteration_s"] for run in runs]),
                    pick([run["trl"]["iteration_s"] for run in runs]),
                    f"**{ratio}**" if stat == "median" else ratio,
                    *[""] * 5,
                ]
            )
        md += _table(
            [
                "",
                f"rlaif ({steady})",
                "TRL",
                "TRL / rlaif (> 1: rlaif faster)",
                "rlaif warm-up s",
                "TRL warm-up s",
                "rlaif CPU busy / stolen",
                "TRL CPU busy / stolen",
                "same prompt rows",
            ],
            rows,
        )
        median_run = setting["runs"][setting["median_run"]]
        md += [f"Phase split of the median run (run {setting['median_run'] + 1}), {steady}:", ""]
        md += _table(
            ["phase", "rlaif", "TRL"],
            [
                [ph, median_run["rlaif"]["split_s"].get(ph), median_run["trl"]["split_s"].get(ph)]
                for ph in (*PPO_PHASES, "other")
            ]
            + [["wall clock", median_run["rlaif"]["iteration_s"], median_run["trl"]["iteration_s"]]],
        )
    md += [
        "CPU shares are the machine's over each side's whole process, start-up included. TRL's training phase is "
        "the rest of its iteration (its logging and clean-up included); rlaif's other is the wall clock beyond its "
        "phase timers (statistics, KL control, logging, metrics files).",
        "",
        "![PPO time split](ppo_split.png)",
        "",
    ]
    _ppo_plot(r, out)
    return md


def _median(values: list[float]) -> float:
    import statistics

    return float(statistics.median(values))


def _shares(side: dict[str, Any]) -> str:
    shares = side.get("cpu_shares")
    return f"{100 * shares['busy']:.0f}% / {100 * shares['steal']:.1f}%" if shares else "—"


def _ppo_plot(r: dict[str, Any], out: Path) -> None:
    """Stacked phase bars of each setting's median run, rlaif and TRL side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    bars: list[tuple[str, dict[str, float]]] = []
    for setting in r["settings"].values():
        median_run = setting["runs"][setting["median_run"]]
        for side, name in (("rlaif", "rlaif"), ("trl", "TRL")):
            bars.append((f"{name}\n{setting['ppo_epochs']} ep.", median_run[side]["split_s"]))
    fig, ax = plt.subplots(figsize=(1.4 * len(bars) + 1, 4))
    bottoms = [0.0] * len(bars)
    for ph in (*PPO_PHASES, "other"):
        vals = [split.get(ph) or 0.0 for _, split in bars]
        ax.bar([label for label, _ in bars], vals, bottom=bottoms, label=ph)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    ax.set_ylabel("wall seconds per PPO iteration")
    ax.set_title("PPO time split (median run of each setting)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "ppo_split.png", dpi=110)
    plt.close(fig)


def _estimators(r: dict[str, Any]) -> list[str]:
    md = ["## 4b. Advantage estimators and asynchronous rollout", ""]
    if not r or _status(r):
        return [*md, _status(r) or "_not run_", ""]
    md += [r.get("setup", ""), "", f"Load average before: {r.get('load_average_before')}.", ""]
    conf = r["configurations"]
    names = list(conf)
    rows = [
        ["iteration s (median of runs)", *[conf[n]["iteration_s"] for n in names]],
        [
            "iteration s, min–max of runs",
            *[f"{conf[n]['iteration_s_min']:.1f}–{conf[n]['iteration_s_max']:.1f}" for n in names],
        ],
        ["samples/s", *[conf[n]["samples_per_s"] for n in names]],
        *[[f"  {ph} s", *[conf[n]["split_s"].get(ph) for n in names]] for ph in (*PPO_PHASES, "other")],
        ["start-up s", *[conf[n]["startup_s"] for n in names]],
        ["whole process s", *[conf[n]["process_wall_s"] for n in names]],
        ["speed-up over gae (same mode)", *[f"{r['speedup_over_gae'][n]:.2f}×" for n in names]],
        ["speed-up over sync (same estimator)", *[f"{r['speedup_over_sync'][n]:.2f}×" for n in names]],
    ]
    md += _table(["", *names], rows)
    return md


def _grpo(r: dict[str, Any]) -> list[str]:
    md = ["## 4c. GRPO iteration, against TRL's GRPOTrainer", ""]
    if not r or _status(r):
        return [*md, _status(r) or "_not run_", ""]
    gen = r.get("generation_backend") or {}
    md += [
        r.get("setup", ""),
        "",
        f"TRL {r.get('trl_version')} (bench/.venv-trl-grpo). Sampling: rlaif {gen.get('rlaif')}, TRL {gen.get('trl')}. "
        f"Load average before: {r.get('load_average_before')}.",
        "",
    ]
    rows = []
    for k, run in enumerate(r["runs"], start=1):
        a, b = run["rlaif"], run["trl"]
        rows.append(
            [
                k,
                run["first"],
                a["iteration_s"],
                b["iteration_s"],
                a["samples_per_s"],
                b["samples_per_s"],
                f"{run['ratio_trl_over_rlaif']:.2f}×",
            ]
        )
    for what in ("min", "median", "max"):
        ratio = f"{r[f'ratio_{what}']:.2f}×"
        rows.append([what, "", "", "", "", "", f"**{ratio}**" if what == "median" else ratio])
    n_warm = r.get("warmup_iterations") or 0
    steady = f"median s per iteration after {n_warm} warm-up" if n_warm else "median s per iteration"
    md += _table(["run", "first", f"rlaif ({steady})", "TRL", "rlaif samples/s", "TRL samples/s", "TRL / rlaif"], rows)
    sides = ("rlaif", "trl")
    split = [[ph, *[r[s]["split_s"].get(ph) for s in sides]] for ph in (*PPO_PHASES, "other")]
    split.append(["total (wall clock)", *[r[s]["iteration_s"] for s in sides]])
    split.append(["response tokens (mean)", *[r[s].get("response_tokens_mean") for s in sides]])
    md += _table(["phase (median over runs, s)", *sides], split)
    for s in sides:
        warm = "; ".join(", ".join(f"{x:.1f}" for x in run) for run in r[s].get("warmup_iteration_s") or [] if run)
        order = "in the file's order" if r[s].get("prompt_order_ok") else "**not in the file's order**"
        md.append(f"- {s}: prompts {order}" + (f"; warm-up iterations (per run) {warm} s" if warm else ""))
    for k, run in enumerate(r["runs"], start=1):
        shares = [(s, run[s].get("cpu_shares")) for s in sides]
        text = ", ".join(f"{s} {100 * c['busy']:.0f}% busy, {100 * c['steal']:.1f}% stolen" for s, c in shares if c)
        if text:
            md.append(f"- run {k} CPU over each side's whole run: {text}")
    goal, ratio = r.get("goal"), r["ratio_median"]
    verdict = "met" if r.get("goal_met") else "missed"
    biggest = max((*PPO_PHASES, "other"), key=lambda ph: r["rlaif"]["split_s"].get(ph) or 0.0)
    md += [
        "",
        f"TRL / rlaif seconds per iteration, median of {len(r['runs'])} runs: **{ratio:.2f}×** "
        f"(min {r['ratio_min']:.2f}×, max {r['ratio_max']:.2f}×; > 1: rlaif faster). "
        f"Goal rlaif ≥ {goal:g}× TRL: **{verdict}**"
        + (
            ""
            if r.get("goal_met")
            else f"; rlaif's largest phase is {biggest}, "
            f"{r['rlaif']['split_s'][biggest]:.1f} of {r['rlaif']['iteration_s']:.1f} s"
        )
        + ".",
        "",
    ]
    return md


def _sync(r: dict[str, Any], out: Path) -> list[str]:
    md = ["## 5. Weight sync", ""]
    if not r or _status(r):
        return [*md, _status(r) or "_not run_", ""]
    # The floor each sync is compared with: an all-core copy of the same bytes (older results have no kind).
    floor = {f["bytes"]: f for f in r.get("floor", []) if f.get("kind", "copy") == "copy"}
    rows = []
    learner = r.get("rlaif")
    if isinstance(learner, list):
        for x in learner:
            fl = floor.get(x["bytes_per_engine"])
            paths = "/".join(x.get("load_paths", [])) or "reload"
            rows.append(
                [
                    x["source"],
                    f"{x['bytes_per_engine'] / 1e6:,.0f}",
                    f"learner → {x['engines']} engine(s), {paths}",
                    x["seconds_median"],
                    x["bytes_per_engine"] / 1e9 / x["seconds_median"],
                    fl["seconds_median"] if fl else None,
                    _ratio(x["seconds_median"], fl["seconds_median"]) if fl else "—",
                ]
            )
    kinds = {
        "copy": "in-process copy (floor)",
        "copy_1thread": "copy, 1 thread",
        "pack_1thread": "vLLM-CPU repack, 1 thread",
    }
    for f in r.get("floor", []):
        label = kinds.get(f.get("kind", "copy"), f.get("kind", ""))
        rows.append([f["source"], f"{f['bytes'] / 1e6:,.0f}", label, f["seconds_median"], f["gb_per_s"], None, ""])
    md += _table(["model", "MB", "path", "seconds", "GB/s per engine", "floor seconds", "× floor"], rows)
    if isinstance(learner, dict) and _status(learner):
        md.append(f"- learner → engines: {_status(learner)}")
    first = {(x["source"], x["engines"]): x["first_push_seconds"] for x in learner or [] if "first_push_seconds" in x}
    if first:
        shown = ", ".join(f"{s} → {n}: {sec:.2f} s" for (s, n), sec in first.items())
        md.append(f"- first push of each pool (shared file faulted in, load plans built), not in the medians: {shown}")
    md += ["", "![sync time vs bytes](sync.png)", ""]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        if isinstance(learner, list):
            for n in sorted({x["engines"] for x in learner}):
                pts = sorted((x["bytes_per_engine"], x["seconds_median"]) for x in learner if x["engines"] == n)
                ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], marker="o", label=f"learner → {n} engine(s)")
        pts = sorted((f["bytes"], f["seconds_median"]) for f in r.get("floor", []) if f.get("kind", "copy") == "copy")
        ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], "k--", marker="x", label="in-process copy (floor)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("MB per engine")
        ax.set_ylabel("seconds per sync")
        ax.set_title("Weight sync")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "sync.png", dpi=110)
        plt.close(fig)
    except ImportError:
        pass
    return md


if __name__ == "__main__":
    write_report(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/results.json"))
