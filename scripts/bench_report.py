#!/usr/bin/python3
"""Report for scripts/bench: reads the sgemm JSON and the nnmpi metrics JSONL of every run,
prints a table, writes DIR/bench.json and DIR/bench.png.

Definitions (see scripts/bench):
  samples/s     total samples / total training time over the epochs kept (epoch 1 is left out
                when a run has several: it pays for page faults, thread start and first touch)
  FLOP/sample   6 W - 2 W1: forward 2 W, backward 4 W, minus the input-layer delta (2 W1) that
                backprop never computes. W = all weights (no biases), W1 = first-layer weights.
  eff_vs_sgemm  achieved GFLOP/s / sgemm ceiling: the 1-thread ceiling for -np 1, the all-core
                (nproc threads) ceiling for -np > 1
  par_eff       samples/s(np) / (np x samples/s(1))
  comm/step     time_comm_s / steps (rank 0's time in the gradient allreduce, including the
                time it waits there for slower ranks)
  repetitions   with --repeat N every case ran N times; the table shows the fastest repetition
                (the machine's capability when its host is least busy) and bench.json keeps
                every repetition, with the median and the CPU time the hypervisor stole
"""
import argparse
import csv
import json
import os
import platform
import re
import socket
import subprocess
import sys


def flops_per_sample(layers):
    w = [layers[i] * layers[i + 1] for i in range(len(layers) - 1)]
    return 6 * sum(w) - 2 * w[0], sum(w), w[0], sum(layers[1:])


def read_jsonl(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith('{"epoch"'):  # not the final or memory lines
                    rows.append(json.loads(line))
    return rows


def read_memory(path):
    """The memory line of a metrics log (written at the end of a run), or None."""
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.startswith('{"memory"'):
                    m = json.loads(line)
                    if "rank0_runtime_mib" in m and m.get("rank0_buffers_mib"):
                        m["rank0_ratio"] = (m["rank0_peak_rss_mib"] - m["rank0_runtime_mib"]) / m["rank0_buffers_mib"]
                    return m
    return None


def gemm_bound(sg, ceil_all, out_dir):
    """The most the wide MLP can reach at -np 2 from its GEMMs alone: each rank runs its shapes
    (with allreduce = shm, half of each layer's units for all 256 rows) on one thread, with no
    synchronisation and no update. The 4096x4096 layer's three
    GEMMs carry equal FLOPs, so their rates combine harmonically. "alone": one process, the
    other core idle. "both": one process pinned to each core at the same time (scripts/bench's
    sgemm_pair_*.json), the slower of the two per shape, which includes what the ranks cost
    each other; this is the bound that applies to -np 2."""
    def combine(rates):
        per_rank = len(rates) / sum(1.0 / r for r in rates)
        return {"per_rank_gflops": per_rank, "two_ranks_gflops": 2 * per_rank,
                "fraction_of_ceiling": 2 * per_rank / ceil_all}
    rates = [c["gflops_best"] for c in sg["cases"] if c["threads"] == 1 and "(rank of 2)" in c["name"]]
    if len(rates) != 3 or not ceil_all:
        return None
    bound = combine(rates)
    pair = []
    for core in (0, 1):
        path = os.path.join(out_dir, "sgemm_pair_%d.json" % core)
        if os.path.exists(path):
            try:
                pair.append([c["gflops_best"] for c in json.load(open(path))["cases"]])
            except (ValueError, KeyError):
                pass
    if len(pair) == 2 and len(pair[0]) == len(pair[1]) == 3:
        bound["both_ranks"] = combine([min(a, b) for a, b in zip(*pair)])
    return bound


def targets(runs, bound=None):
    """Issue #6's targets, checked against this run's own figures (None: the case did not run)."""
    def find(name, np_):
        return next((r for r in runs if r["name"] == name and r["np"] == np_ and r.get("samples_per_s")), None)

    def fm(batch):  # real Fashion-MNIST when present, else the synthetic set of the same shape
        return find("fmnist-real-b%d" % batch, 2) or find("fmnist-synth-b%d" % batch, 2)

    out = []

    def add(what, r, value, goal, ok, fmt):
        out.append({"target": what, "case": "%s -np %d" % (r["name"], r["np"]) if r else None,
                    "value": value, "goal": goal, "met": (ok if r else None), "text": fmt})

    w = find("wide-synth-b256", 2)
    add("wide MLP -np 2: GFLOP/s / 2-core sgemm ceiling", w, w and w["eff_vs_sgemm"], 0.85,
        w and w["eff_vs_sgemm"] >= 0.85, "%.1f%%" % (100 * w["eff_vs_sgemm"]) if w else "-")
    w1 = find("wide-synth-b256", 1)
    if w and w1 and w1.get("sgemm_ceiling_gflops"):
        # OpenBLAS's own threads may lose more than the ranks do: the stricter yardstick too
        out[-1]["vs_np_x_1thread_ceiling"] = w["gflops"] / (w["np"] * w1["sgemm_ceiling_gflops"])
    if bound:
        out[-1]["gemm_only_bound"] = bound["fraction_of_ceiling"]
        if "both_ranks" in bound:
            out[-1]["gemm_only_bound_both_ranks"] = bound["both_ranks"]["fraction_of_ceiling"]
    f = fm(128)
    add("fmnist MLP batch 128 -np 2: samples/s", f, f and f["samples_per_s"], 120000,
        f and f["samples_per_s"] >= 120000, "%.0f" % f["samples_per_s"] if f else "-")
    f = fm(512)
    pe = f.get("par_eff") if f else None
    add("fmnist MLP batch 512, 1 -> 2 ranks: parallel efficiency", f if pe else None, pe, 0.90,
        pe is not None and pe >= 0.90, "%.1f%%" % (100 * pe) if pe else "-")
    add("fmnist MLP batch 512 -np 2: exposed allreduce / step", f, f and f["comm_fraction"], 0.10,
        f and f["comm_fraction"] <= 0.10, "%.1f%%" % (100 * f["comm_fraction"]) if f else "-")
    mems = [r for r in runs if (r.get("memory") or {}).get("rank0_ratio")]
    worst = max(mems, key=lambda r: abs(r["memory"]["rank0_ratio"] - 1)) if mems else None
    wr = worst["memory"]["rank0_ratio"] if worst else None
    add("peak memory beyond the runtime's / buffers' account (worst run)", worst, wr, "0.90-1.10",
        worst and 0.9 <= wr <= 1.1, "%.2f" % wr if worst else "-")
    return out


def summarize(rows, batch):
    """Per-run figures from the per-epoch JSON objects."""
    prev = 0
    for r in rows:
        r["_steps"] = r["step"] - prev
        prev = r["step"]
    kept = rows[1:] if len(rows) > 1 else rows
    if not kept:
        return None
    samples = sum(r["_steps"] * batch for r in kept)
    train_time = sum(r["_steps"] * batch / r["samples_per_s"] for r in kept if r["samples_per_s"])
    steps = sum(r["_steps"] for r in kept)
    comp = sum(r["time_compute_s"] for r in kept)
    comm = sum(r["time_comm_s"] for r in kept)
    io = sum(r["time_io_s"] for r in kept)
    return {
        "epochs_total": len(rows),
        "epochs_used": len(kept),
        "first_epoch_excluded": len(rows) > 1,
        "steps_per_epoch": [r["_steps"] for r in rows],
        "samples_per_s": samples / train_time if train_time > 0 else None,
        "samples_per_s_per_epoch": [r["samples_per_s"] for r in rows],
        "train_time_s": train_time,
        "steps": steps,
        "time_compute_per_step_s": comp / steps,
        "time_comm_per_step_s": comm / steps,
        "time_io_per_step_s": io / steps,
        "time_other_per_step_s": max(0.0, train_time - comp - comm - io) / steps,
        "comm_fraction": comm / train_time if train_time > 0 else None,
        "final_train_loss": rows[-1].get("train_loss"),
        "allreduce": rows[-1].get("allreduce"),
    }


def machine_info():
    info = {"hostname": socket.gethostname(), "nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            txt = f.read()
        m = re.search(r"^model name\s*:\s*(.*)$", txt, re.M)
        info["cpu_model"] = m.group(1) if m else None
        flags = re.search(r"^flags\s*:\s*(.*)$", txt, re.M)
        fl = flags.group(1).split() if flags else []
        info["avx512f"] = "avx512f" in fl
        info["avx2"] = "avx2" in fl
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_kib"] = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--sgemm", required=True)
    ap.add_argument("--quick", default="0")
    ap.add_argument("--np-par", type=int, default=2)
    ap.add_argument("--load-start", type=float)
    ap.add_argument("--load-end", type=float)
    ap.add_argument("--elapsed", type=float)
    a = ap.parse_args()

    sg = json.load(open(a.sgemm))
    ceil = {int(k): v for k, v in sg["ceiling_gflops"].items()}
    nproc = os.cpu_count() or 1
    ceil_all = ceil.get(nproc, max(ceil.values()))

    runs = []
    with open(a.runs) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            layers = [int(x) for x in row["layers"].split(",")]
            batch = int(row["batch"])
            np_ = int(row["np"])
            fps, w, w1, biases = flops_per_sample(layers)
            core = probe = None
            try:
                with open(row["stdout"]) as so:
                    text = so.read()
                m = re.search(r"OpenBLAS[^\n]*?core[^\n]*", text)
                core = m.group(0).strip() if m else None
                # nnmpi's start-up timing of one gradient allreduce (blocking/overlap, 2+ ranks)
                m = re.search(r"^gradient allreduce at start: [0-9.]+ MB in ([0-9.]+) ms", text, re.M)
                probe = float(m.group(1)) if m else None
            except OSError:
                pass
            s = summarize(read_jsonl(row["metrics"]), batch)
            mem = read_memory(row["metrics"])
            run = {"name": row["name"], "np": np_, "oversubscribed": np_ > nproc, "layers": layers,
                   "global_batch": batch, "weights": w, "first_layer_weights": w1,
                   "parameters": w + biases, "gradient_bytes": 4 * (w + biases),
                   "flop_per_sample": fps, "exit_status": int(row["status"]),
                   "rep": int(row.get("rep") or 1), "steal_frac": float(row.get("steal_frac") or 0),
                   "wall_s": float(row["wall_s"]), "machine_busy_frac": float(row["busy_frac"]),
                   "loadavg_before": float(row["loadavg_before"]),
                   "loadavg_after": float(row["loadavg_after"]), "nnmpi_blas_line": core,
                   "allreduce_probe_ms": probe,
                   "other_work_at_start": row.get("others") or "",
                   "metrics_file": row["metrics"], "stdout_file": row["stdout"], "memory": mem}
            if s:
                run.update(s)
                run["gflops"] = s["samples_per_s"] * fps * 1e-9
                c = ceil[1] if np_ == 1 else ceil_all
                run["sgemm_ceiling_gflops"] = c
                run["ceiling_kind"] = "1 thread" if np_ == 1 else "%d threads (all cores)" % nproc
                run["eff_vs_sgemm"] = run["gflops"] / c
            runs.append(run)

    # Repetitions of a case: keep the fastest as the case's figures, the rest under "repetitions".
    groups = {}
    for r in runs:
        groups.setdefault((r["name"], r["np"]), []).append(r)
    runs = []
    for reps in groups.values():
        ok = [r for r in reps if r.get("samples_per_s")]
        best = dict(max(ok, key=lambda r: r["samples_per_s"]) if ok else reps[0])
        sps = sorted(r["samples_per_s"] for r in ok)
        best["repetitions"] = [{k: r.get(k) for k in ("rep", "exit_status", "samples_per_s", "gflops",
                                                      "machine_busy_frac", "steal_frac", "time_comm_per_step_s",
                                                      "allreduce_probe_ms")}
                               for r in reps]
        best["samples_per_s_median"] = (sps[len(sps) // 2] if len(sps) % 2 else 0.5 * (sps[len(sps) // 2 - 1] + sps[len(sps) // 2])) if sps else None
        runs.append(best)

    # Parallel efficiency against the same case at -np 1.
    base = {r["name"]: r for r in runs if r["np"] == 1 and r.get("samples_per_s")}
    for r in runs:
        b = base.get(r["name"])
        if b and r.get("samples_per_s"):
            r["speedup"] = r["samples_per_s"] / b["samples_per_s"]
            r["par_eff"] = r["speedup"] / r["np"]

    busy = [r["machine_busy_frac"] for r in runs]
    report = {
        "tool": "scripts/bench", "quick": a.quick == "1",
        "machine": machine_info(),
        "environment": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")},
        "busy": {"loadavg_start": a.load_start, "loadavg_end": a.load_end,
                 "machine_busy_frac_per_run": {f'{r["name"]}-np{r["np"]}': r["machine_busy_frac"] for r in runs},
                 "other_work_per_run": {f'{r["name"]}-np{r["np"]}': r["other_work_at_start"] for r in runs},
                 "note": "loadavg and the whole-machine CPU busy fraction during each run (from /proc/stat); "
                         "an idle machine gives about np/nproc. The machine is shared: higher values mean other work "
                         "ran at the same time and the figures are lower bounds."},
        "elapsed_s": a.elapsed,
        "sgemm_other_work": (open(os.path.join(a.out, "sgemm_other_work.txt")).read().strip()
                             if os.path.exists(os.path.join(a.out, "sgemm_other_work.txt")) else None),
        "sgemm": sg,
        "definitions": __doc__,
        "runs": runs,
        "wide_np2_gemm_bound": gemm_bound(sg, ceil_all, a.out),
        "targets": None,
    }
    report["targets"] = targets(runs, report["wide_np2_gemm_bound"])
    try:
        report["nnmpi_version"] = subprocess.run([os.path.join(os.environ.get("NNMPI_BUILD_DIR", "build"), "nnmpi"), "--version"],
                                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump(report, f, indent=1)

    # --- the table ---
    print()
    print("sgemm ceiling (OpenBLAS core %s): %s" % (sg["openblas_core"], ", ".join(
        "%d thread%s %.1f GFLOP/s" % (k, "s" if k > 1 else "", v) for k, v in sorted(ceil.items()))))
    for c in sg["cases"]:
        print("  %-28s threads %d  best %6.1f  median %6.1f GFLOP/s" % (c["name"], c["threads"], c["gflops_best"], c["gflops_median"]))
    print("loadavg start %s end %s; CPU busy during runs %.2f-%.2f of %d cores' time" % (
        a.load_start, a.load_end, min(busy) if busy else 0, max(busy) if busy else 0, nproc))
    hdr = "%-18s %3s %-8s %6s %9s %9s %8s %7s %8s %7s %10s %10s %8s %6s %6s" % (
        "case", "np", "sum", "batch", "samples/s", "(median)", "GFLOP/s", "eff_vs", "par_eff", "speedup",
        "comp/step", "comm/step", "probe", "busy", "stolen")
    print(hdr)
    print("-" * len(hdr))
    for r in runs:
        if not r.get("samples_per_s"):
            print("%-18s %3d %6d  failed: exit %d (see %s)" % (r["name"], r["np"], r["global_batch"], r["exit_status"], r["stdout_file"]))
            continue
        print("%-18s %3d %-8s %6d %9.0f %9.0f %8.1f %6.1f%% %8s %7s %9.2fms %9.2fms %8s %6.2f %6.3f%s" % (
            r["name"], r["np"], r.get("allreduce") or "-", r["global_batch"], r["samples_per_s"], r["samples_per_s_median"], r["gflops"],
            100 * r["eff_vs_sgemm"], "%.1f%%" % (100 * r["par_eff"]) if "par_eff" in r and r["np"] > 1 else "-",
            "%.2fx" % r["speedup"] if "speedup" in r and r["np"] > 1 else "-",
            1e3 * r["time_compute_per_step_s"], 1e3 * r["time_comm_per_step_s"],
            "%.2fms" % r["allreduce_probe_ms"] if r.get("allreduce_probe_ms") is not None else "-",
            r["machine_busy_frac"], r["steal_frac"], "  (oversubscribed)" if r["oversubscribed"] else ""))
    print("memory (rank 0): peak resident = runtime at start + the rest; the rest / buffers' account")
    for r in runs:
        m = r.get("memory")
        if m and "rank0_ratio" in m:
            print("  %-18s np %d  peak %6.0f MiB = %4.0f + %6.0f; buffers %6.0f MiB; ratio %.2f" % (
                r["name"], r["np"], m["rank0_peak_rss_mib"], m["rank0_runtime_mib"],
                m["rank0_peak_rss_mib"] - m["rank0_runtime_mib"], m["rank0_buffers_mib"], m["rank0_ratio"]))
    print("targets (issue #6), from this run:")
    for t in report["targets"]:
        print("  %-62s %10s  goal %-9s %s%s" % (t["target"], t["text"], t["goal"] if not isinstance(t["goal"], float) else
              ("%.0f%%" % (100 * t["goal"]) if t["goal"] < 1 else "%.0f" % t["goal"]),
              {True: "met", False: "NOT met", None: "not measured"}[t["met"]], "  (%s)" % t["case"] if t["case"] else ""))
        if "vs_np_x_1thread_ceiling" in t:
            print("  %-62s %9.1f%%" % ("  the same against ranks x the 1-thread ceiling", 100 * t["vs_np_x_1thread_ceiling"]))
    gb = report["wide_np2_gemm_bound"]
    if gb:
        print("  bound for the wide MLP at -np 2 from the GEMMs alone (the 4096x4096 layer, each rank half of its units for 256 rows, 1 thread each, no "
              "communication): %.1f GFLOP/s = %.1f%% of the 2-core ceiling, each rank measured alone" % (
                  gb["two_ranks_gflops"], 100 * gb["fraction_of_ceiling"]))
        if "both_ranks" in gb:
            print("    with both ranks' GEMMs running at once (one pinned to each core): %.1f GFLOP/s = %.1f%%" % (
                gb["both_ranks"]["two_ranks_gflops"], 100 * gb["both_ranks"]["fraction_of_ceiling"]))
    if report["sgemm_other_work"]:
        print("SHARED MACHINE: other work ran when the sgemm ceiling was measured (%s): the ceiling is low "
              "and efficiencies against it are overstated" % report["sgemm_other_work"])
    others = sorted({r["other_work_at_start"] for r in runs if r["other_work_at_start"]})
    if others:
        print("SHARED MACHINE: other processes used CPU when runs started: %s" % "; ".join(others))
        print("  -> the figures of those runs are lower bounds (see busy column: ~np/%d when idle)" % nproc)
    print("eff_vs: achieved GFLOP/s / sgemm ceiling (1-thread for np 1, %d-thread for np > 1); "
          "FLOP/sample = 6W - 2W1; epoch 1 excluded when several. Each row is the fastest of %d "
          "repetition(s); stolen = CPU time the hypervisor gave to other VMs; sum = the gradient "
          "reduction in use ([train] allreduce); probe = nnmpi's start-up timing of the gradient allreduce "
          "(fastest of 5; a slow period of the machine shows there)." % (nproc, max(len(r["repetitions"]) for r in runs)))

    # --- the plot ---
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench_report: matplotlib missing for %s (apt-get install python3-matplotlib): no plot" % sys.executable,
              file=sys.stderr)
        return
    ok = [r for r in runs if r.get("samples_per_s")]
    names = list(dict.fromkeys(r["name"] for r in ok))
    nps = sorted({r["np"] for r in ok})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8.5))
    width = 0.8 / max(1, len(nps))
    for j, np_ in enumerate(nps):
        xs, ys, labels = [], [], []
        for i, n in enumerate(names):
            r = next((r for r in ok if r["name"] == n and r["np"] == np_), None)
            if r:
                xs.append(i + (j - (len(nps) - 1) / 2) * width)
                ys.append(r["gflops"])
                labels.append("%.0f/s" % r["samples_per_s"])
        bars = ax1.bar(xs, ys, width, label="-np %d" % np_)
        for b, t in zip(bars, labels):
            ax1.annotate(t, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    for k, v in sorted(ceil.items()):
        ax1.axhline(v, ls="--", lw=1, color="gray")
        ax1.annotate("sgemm ceiling, %d thread%s: %.0f GFLOP/s" % (k, "s" if k > 1 else "", v), (len(names) - 0.5, v),
                     ha="right", va="bottom", fontsize=8, color="gray")
    ax1.set_xticks(range(len(names)))
    ax1.set_xticklabels(names)
    ax1.set_ylabel("achieved GFLOP/s (bar labels: samples/s)")
    ax1.set_title("nnmpi throughput on %s (%d cores, core %s, loadavg %.2f at start)" % (
        socket.gethostname(), nproc, sg["openblas_core"], a.load_start or 0))
    ax1.legend(loc="upper left")
    series = [("efficiency vs sgemm ceiling, -np 1", lambda r: r["np"] == 1, "eff_vs_sgemm")]
    for np_ in nps:
        if np_ > 1:
            series.append(("efficiency vs sgemm ceiling, -np %d" % np_, lambda r, n=np_: r["np"] == n, "eff_vs_sgemm"))
            series.append(("parallel efficiency 1 -> %d ranks" % np_, lambda r, n=np_: r["np"] == n, "par_eff"))
    w2 = 0.8 / len(series)
    for j, (lab, sel, key) in enumerate(series):
        xs, ys = [], []
        for i, n in enumerate(names):
            r = next((r for r in ok if r["name"] == n and sel(r) and key in r), None)
            if r:
                xs.append(i + (j - (len(series) - 1) / 2) * w2)
                ys.append(100 * r[key])
        ax2.bar(xs, ys, w2, label=lab)
    ax2.axhline(100, ls=":", color="gray")
    # issue #6's targets: parallel efficiency >= 90% (batch 512), wide -np 2 >= 85% of the ceiling
    for y, text, color in ((90, "target: parallel efficiency 90% (batch 512)", "firebrick"),
                           (85, "target: wide -np 2 at 85% of the ceiling", "darkorange")):
        ax2.axhline(y, ls="--", lw=0.8, color=color, label=text)
    gb = report.get("wide_np2_gemm_bound")
    if gb and "wide-synth-b256" in names:
        i = names.index("wide-synth-b256")
        g = gb.get("both_ranks", gb)
        ax2.hlines(100 * g["fraction_of_ceiling"], i - 0.4, i + 0.4, colors="black", lw=1.5,
                   label="wide -np 2: the most its GEMMs alone allow (%.1f%%)" % (100 * g["fraction_of_ceiling"]))
    ax2.set_xticks(range(len(names)))
    ax2.set_xticklabels(names)
    ax2.set_ylabel("%")
    ax2.set_ylim(0, 125)
    ax2.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "bench.png"), dpi=110)


if __name__ == "__main__":
    main()
