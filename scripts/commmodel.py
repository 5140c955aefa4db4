#!/usr/bin/python3
"""Alpha-beta model of nnmpi's gradient allreduce, and predicted scaling.

  /usr/bin/python3 scripts/commmodel.py [--out DIR] [--np 2] [--quick] [--launches N]
        [--allreduce-json FILE] [--bench DIR/bench.json] [--scaling CSV ...]
        [--net-alpha S --net-beta S_PER_BYTE]

1. Measures MPI_Allreduce(SUM, float) from 4 B to 100 MB with build/nnmpi-allreduce-bench at
   -np 2 (or reads --allreduce-json), and fits T(n) = a + b n to the per-call minimum times
   (least squares on relative error, so small and large messages weigh alike).
   The bench runs in --launches separate mpirun launches (default 3, --quick 1) and each size
   keeps its fastest launch: on the development VMs two processes' allreduce goes through slow
   periods of seconds to minutes, 4-5x slower for messages above a few KiB (0.94 MB: 104-121 us
   or 498-580 us), which can start in the middle of a launch. allreduce.json keeps every launch;
   the report prints their spread.
   With p ranks:  ring               T = 2(p-1) alpha + 2(p-1)/p n beta
                  recursive doubling T = log2(p) (alpha + n beta)
   At the measured p = 2 both are a + b n: ring alpha = a / 2, beta = b; recursive doubling
   alpha = a, beta = b. The two models differ only when extrapolated to larger p.
2. Predicts the step time of data-parallel training on p nodes (one rank per node):
   T(p) = t_sample * batch / p + T_allreduce(p, 4 x parameters bytes), for the Fashion-MNIST MLP
   (784-256-128-10, batch 128) and the wide MLP (1024-4096-4096-1024, batch 256):
   strong scaling (global batch fixed; nnmpi caps p at the partitions, <= 64, and p <= batch)
   and weak scaling (batch per rank fixed at the 1-rank batch). Efficiency = T(1) / (p T(p))
   (strong) or T(1) / T(p) (weak), p = 1..1024.
   t_sample is the measured compute time per sample at -np 1 from scripts/bench's bench.json
   (time_compute_s / steps / batch); without it, FLOP/sample / (0.8 x the 1-thread sgemm
   ceiling) or, lacking both, / 80 GFLOP/s.
3. Plots the predictions with the measured points of scripts/scaling-study CSVs (efficiency
   column; oversubscribed runs hollow) into DIR/commmodel.png, and writes DIR/commmodel.json.
   The fitted alpha/beta here are intra-node (shared memory); the thin gray lines use an assumed
   cluster network (--net-alpha, --net-beta; default 2 us, 1/(10 GB/s)) for comparison.
"""
import argparse
import csv
import glob
import json
import math
import os
import subprocess
import sys

MODELS = {
    "fmnist": {"layers": [784, 256, 128, 10], "batch": 128, "label": "Fashion-MNIST MLP 784-256-128-10, B=128"},
    "wide": {"layers": [1024, 4096, 4096, 1024], "batch": 256, "label": "wide MLP 1024-4096-4096-1024, B=256"},
}
MAX_PARTITIONS = 64  # nnmpi: [data] partitions <= 64 when auto; ranks <= partitions


def params(layers):
    w = [layers[i] * layers[i + 1] for i in range(len(layers) - 1)]
    return sum(w) + sum(layers[1:]), sum(w), w[0]


def flop_per_sample(layers):
    _, w, w1 = params(layers)
    return 6 * w - 2 * w1


def fit_linear_relative(xs, ys):
    """Minimise sum(((a + b x) - y) / y)^2: weighted least squares with weights 1/y^2."""
    sw = swx = swxx = swy = swxy = 0.0
    for x, y in zip(xs, ys):
        w = 1.0 / (y * y)
        sw += w; swx += w * x; swxx += w * x * x; swy += w * y; swxy += w * x * y
    det = sw * swxx - swx * swx
    b = (sw * swxy - swx * swy) / det
    a = (swy - b * swx) / sw
    return a, b


def t_ring(p, n, alpha, beta):
    return 0.0 if p <= 1 else 2 * (p - 1) * alpha + 2 * (p - 1) / p * n * beta


def t_rd(p, n, alpha, beta):
    return 0.0 if p <= 1 else math.ceil(math.log2(p)) * (alpha + n * beta)


def run_allreduce(np_, quick, out, launches):
    """Runs the bench `launches` times; returns the per-size minimum over launches, with every
    launch kept under "launches"."""
    bdir = os.environ.get("NNMPI_BUILD_DIR", "build")
    exe = os.path.join(bdir, "nnmpi-allreduce-bench")
    if not os.access(exe, os.X_OK):
        subprocess.run(["bash", "scripts/build"], check=True)
    cmd = ["bash", "scripts/mpirun-local", "-np", str(np_), "--timeout", "600", exe, "--json"]
    if quick:
        cmd += ["--trials", "3", "--trial-ms", "10"]
    env = dict(os.environ)
    if not env.get("OPENBLAS_CORETYPE"):
        env["OPENBLAS_CORETYPE"] = "SKYLAKEX"  # harmless here: the bench does no BLAS
    runs = []
    for i in range(launches):
        print("commmodel: launch %d of %d: %s" % (i + 1, launches, " ".join(cmd)), flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(next(l for l in r.stdout.splitlines() if l.startswith("{"))))
    by_size = [{s["bytes"]: s for s in run["sizes"]} for run in runs]
    if any(set(b) != set(by_size[0]) for b in by_size):
        sys.exit("commmodel: the launches of the allreduce bench measured different sizes")
    best = dict(runs[0])
    best["sizes"] = []
    for s in runs[0]["sizes"]:
        mine = [b[s["bytes"]] for b in by_size]
        pick = min(mine, key=lambda x: x["min_s"])
        best["sizes"].append(dict(pick, min_s_per_launch=[x["min_s"] for x in mine]))
    best["launches"] = runs
    path = os.path.join(out, "allreduce.json")
    with open(path, "w") as f:
        json.dump(best, f)
        f.write("\n")
    return best


def t_sample_from_bench(bench, name, layers):
    """Compute seconds per sample at -np 1 from scripts/bench's report, matching the layers."""
    best = None
    for r in bench.get("runs", []):
        if r.get("np") == 1 and r.get("layers") == layers and r.get("steps"):
            t = r["time_compute_per_step_s"] / r["global_batch"]
            src = "%s -np 1 in %s (compute/step / batch)" % (r["name"], bench.get("_path"))
            if best is None or t < best[0]:
                best = (t, src)
    if best:
        return best
    ceil = bench.get("sgemm", {}).get("ceiling_gflops", {}).get("1")
    if ceil:
        return flop_per_sample(layers) / (0.8 * ceil * 1e9), "FLOP/sample / (0.8 x 1-thread sgemm ceiling)"
    return None


def read_scaling(paths):
    rows = []
    for p in paths:
        try:
            with open(p) as f:
                for r in csv.DictReader(f):
                    if r.get("efficiency"):
                        rows.append(r)
        except OSError:
            pass
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--launches", type=int, default=None, help="mpirun launches of the bench, 1 or more (default 3, --quick 1)")
    ap.add_argument("--allreduce-json")
    ap.add_argument("--bench", help="bench.json of scripts/bench (default: the newest results/bench-*/bench.json)")
    ap.add_argument("--scaling", nargs="*", help="scaling-study CSVs (default: results/scaling-*/scaling.csv)")
    ap.add_argument("--net-alpha", type=float, default=2e-6)
    ap.add_argument("--net-beta", type=float, default=1 / 10e9)
    ap.add_argument("--max-nodes", type=int, default=1024)
    a = ap.parse_args()
    if a.launches is not None and a.launches < 1:
        ap.error("--launches must be 1 or more")
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import time
    out = a.out or time.strftime("results/commmodel-%Y%m%d-%H%M%S")
    os.makedirs(out, exist_ok=True)

    # --- 1. measure and fit ---
    ar = json.load(open(a.allreduce_json)) if a.allreduce_json else run_allreduce(
        a.np, a.quick, out, a.launches or (1 if a.quick else 3))
    p_meas = ar["ranks"]
    xs = [s["bytes"] for s in ar["sizes"]]
    ys = [s["min_s"] for s in ar["sizes"]]
    # Two estimators of T(n) = a + b n:
    #  - two-regime (used for the predictions): a = median time of messages <= 1 KiB (latency
    #    plateau), b = least-squares slope over messages >= 1 MiB (bandwidth regime). Robust to
    #    Open MPI switching algorithms (eager / rendezvous, segmenting) in between.
    #  - one fit over all sizes minimising the relative error (reported for comparison).
    A_rel, B_rel = fit_linear_relative(xs, ys)
    small = sorted(y for x, y in zip(xs, ys) if x <= 1024)
    lat_small = small[len(small) // 2] if small else A_rel
    big = [(x, y) for x, y in zip(xs, ys) if x >= 1 << 20]
    if len(big) >= 2:
        mx = sum(x for x, _ in big) / len(big)
        my = sum(y for _, y in big) / len(big)
        B_big = sum((x - mx) * (y - my) for x, y in big) / sum((x - mx) ** 2 for x, _ in big)
        A_big = my - B_big * mx
    else:
        A_big, B_big = A_rel, B_rel
    A, B = lat_small, B_big if B_big > 0 else B_rel
    if p_meas == 2:
        ring = {"alpha_s": A / 2, "beta_s_per_byte": B}
        rd = {"alpha_s": A, "beta_s_per_byte": B}
    else:  # invert the model forms for the measured p
        k = 2 * (p_meas - 1)
        ring = {"alpha_s": A / k, "beta_s_per_byte": B / (k / p_meas)}
        lg = math.ceil(math.log2(p_meas))
        rd = {"alpha_s": A / lg, "beta_s_per_byte": B / lg}
    # The fit minimises relative error; a negative intercept can happen when the data is noisy.
    for m in (ring, rd):
        m["alpha_s"] = max(m["alpha_s"], 0.0)
        m["bandwidth_GB_per_s"] = 1e-9 / m["beta_s_per_byte"] if m["beta_s_per_byte"] > 0 else None
    print("commmodel: MPI_Allreduce on %d ranks, %d sizes %d B .. %d B" % (p_meas, len(xs), xs[0], xs[-1]))
    per = [s for s in ar["sizes"] if s.get("min_s_per_launch") and s["bytes"] >= 1 << 19]
    if per:  # the spread between launches, for the first size of the bandwidth regime
        s0 = per[0]
        print("  per launch at %d B: %s us (each size keeps its fastest launch)" % (
            s0["bytes"], ", ".join("%.0f" % (1e6 * t) for t in s0["min_s_per_launch"])))
    print("  T(n) = a + b n, two-regime fit (used): a = %.3g us (median time <= 1 KiB), b = %.4g ns/B (%.2f GB/s, slope >= 1 MiB)" % (
        1e6 * A, 1e9 * B, 1e-9 / B if B > 0 else float("nan")))
    print("  for comparison, one relative-least-squares fit over all sizes: a = %.3g us, b = %.4g ns/B (%.2f GB/s)" % (
        1e6 * A_rel, 1e9 * B_rel, 1e-9 / B_rel if B_rel > 0 else float("nan")))
    print("  ring:               alpha = %.3g us, beta = %.4g ns/B (%.2f GB/s)" % (
        1e6 * ring["alpha_s"], 1e9 * ring["beta_s_per_byte"], ring["bandwidth_GB_per_s"] or float("nan")))
    print("  recursive doubling: alpha = %.3g us, beta = %.4g ns/B (%.2f GB/s)" % (
        1e6 * rd["alpha_s"], 1e9 * rd["beta_s_per_byte"], rd["bandwidth_GB_per_s"] or float("nan")))
    resid = [((A + B * x) - y) / y for x, y in zip(xs, ys)]
    print("  relative residuals: median |r| = %.0f%%, max |r| = %.0f%%" % (
        100 * sorted(abs(r) for r in resid)[len(resid) // 2], 100 * max(abs(r) for r in resid)))
    print("  assumed cluster network for comparison: alpha = %.3g us, beta = %.4g ns/B" % (1e6 * a.net_alpha, 1e9 * a.net_beta))

    # --- 2. predictions ---
    bench_path = a.bench
    if not bench_path:
        cands = sorted(glob.glob("results/bench-*/bench.json"), key=os.path.getmtime)
        bench_path = cands[-1] if cands else None
    bench = json.load(open(bench_path)) if bench_path and os.path.exists(bench_path) else {}
    bench["_path"] = bench_path
    scaling_paths = a.scaling if a.scaling is not None else sorted(glob.glob("results/scaling-*/scaling.csv"))
    measured = read_scaling(scaling_paths)

    ps = list(range(1, a.max_nodes + 1))
    report = {"tool": "scripts/commmodel.py", "allreduce": ar, "fit": {
        "method": "two-regime: a = median time <= 1 KiB, b = slope over >= 1 MiB",
        "T_a_s": A, "T_b_s_per_byte": B, "T_a_rel_fit_s": A_rel, "T_b_rel_fit_s_per_byte": B_rel,
        "T_a_large_intercept_s": A_big,
        "ring": ring, "recursive_doubling": rd, "measured_ranks": p_meas,
        "residuals_relative": resid},
        "assumed_network": {"alpha_s": a.net_alpha, "beta_s_per_byte": a.net_beta},
        "bench_json": bench_path, "scaling_csvs": scaling_paths, "models": {}}
    print()
    print("%-7s %9s %12s %10s | %s" % ("model", "grad MB", "t_sample us", "T1 step ms",
                                       "predicted efficiency (ring fit) strong / weak at p = 2, 8, 64, 1024"))
    for name, m in MODELS.items():
        layers, batch = m["layers"], m["batch"]
        n_par, _, _ = params(layers)
        nbytes = 4 * n_par
        ts = t_sample_from_bench(bench, name, layers)
        if ts is None:
            ts = (flop_per_sample(layers) / 80e9, "FLOP/sample / 80 GFLOP/s (no bench.json)")
        t_s, src = ts
        pred = {}
        for alg, f, al, be in (("ring", t_ring, ring["alpha_s"], ring["beta_s_per_byte"]),
                               ("recursive_doubling", t_rd, rd["alpha_s"], rd["beta_s_per_byte"]),
                               ("ring_assumed_network", t_ring, a.net_alpha, a.net_beta),
                               ("rd_assumed_network", t_rd, a.net_alpha, a.net_beta)):
            t1 = t_s * batch
            strong, weak, st_t, wk_t = [], [], [], []
            for p in ps:
                ts_p = t_s * batch / p + f(p, nbytes, al, be)
                tw_p = t_s * batch + f(p, nbytes, al, be)
                st_t.append(ts_p); wk_t.append(tw_p)
                strong.append(t1 / (p * ts_p)); weak.append(t1 / tw_p)
            pred[alg] = {"strong_eff": strong, "weak_eff": weak, "strong_step_s": st_t, "weak_step_s": wk_t}
        report["models"][name] = {"layers": layers, "batch": batch, "parameters": n_par, "gradient_bytes": nbytes,
                                  "t_sample_s": t_s, "t_sample_source": src, "p": ps,
                                  "strong_valid_max_p": min(batch, MAX_PARTITIONS), "prediction": pred}
        pick = [2, 8, 64, 1024]
        r = pred["ring"]
        print("%-7s %9.2f %12.2f %10.2f | %s" % (name, nbytes / 1e6, 1e6 * t_s, 1e3 * t_s * batch, "  ".join(
            "p=%d %.0f%%/%.0f%%" % (p, 100 * r["strong_eff"][p - 1], 100 * r["weak_eff"][p - 1]) for p in pick)))
    for name in MODELS:
        print("  %s: t_sample from %s" % (name, report["models"][name]["t_sample_source"]))
    print("  (strong scaling beyond p = %d is beyond nnmpi's partition limit)" % MAX_PARTITIONS)
    with open(os.path.join(out, "commmodel.json"), "w") as f:
        json.dump(report, f)

    # --- 3. plot ---
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("commmodel: matplotlib missing for %s (apt-get install python3-matplotlib): no plot" % sys.executable)
        return
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    ax = axes[0]
    ax.loglog(xs, [1e6 * y for y in ys], "o", label="measured min, %d ranks" % p_meas)
    ax.loglog(xs, [1e6 * (A + B * x) for x in xs], "-", label="two-regime fit a + b n (used)")
    ax.loglog(xs, [1e6 * (A_rel + B_rel * x) for x in xs], ":", label="relative LSQ fit, all sizes")
    ax.set_xlabel("message bytes"); ax.set_ylabel("MPI_Allreduce time (us)")
    ax.set_title("alpha-beta fit: ring a=%.2gus b=%.3gns/B" % (1e6 * ring["alpha_s"], 1e9 * B), fontsize=10)
    ax.grid(True, which="both", alpha=0.3); ax.legend(fontsize=8)
    for ax, (name, m) in zip(axes[1:], MODELS.items()):
        rm = report["models"][name]
        pr = rm["prediction"]
        pmax = rm["strong_valid_max_p"]
        ax.semilogx(ps[:pmax], pr["ring"]["strong_eff"][:pmax], "C0-", label="strong, ring (fit)")
        ax.semilogx(ps[pmax - 1:], pr["ring"]["strong_eff"][pmax - 1:], "C0:", lw=1)
        ax.semilogx(ps[:pmax], pr["recursive_doubling"]["strong_eff"][:pmax], "C1-", label="strong, rec. doubling (fit)")
        ax.semilogx(ps, pr["ring"]["weak_eff"], "C0--", label="weak, ring (fit)")
        ax.semilogx(ps, pr["recursive_doubling"]["weak_eff"], "C1--", label="weak, rec. doubling (fit)")
        ax.semilogx(ps[:pmax], pr["ring_assumed_network"]["strong_eff"][:pmax], "-", color="0.6", lw=1,
                    label="strong, ring, assumed net")
        ax.semilogx(ps, pr["ring_assumed_network"]["weak_eff"], "--", color="0.6", lw=1, label="weak, ring, assumed net")
        ax.axvline(pmax, color="k", lw=0.5, ls=":")
        pts = [r for r in measured if [int(x) for x in r["layers"].split(",")] == m["layers"]]
        for mode, mk in (("strong", "s"), ("weak", "^")):
            for over in ("0", "1"):
                sel = [r for r in pts if r["mode"] == mode and r["oversubscribed"] == over]
                if sel:
                    ax.semilogx([int(r["ranks"]) for r in sel], [float(r["efficiency"]) for r in sel], mk,
                                color="C3", mfc="none" if over == "1" else "C3", ms=7,
                                label="measured %s (B=%s)%s" % (mode, "/".join(sorted({r["global_batch"] for r in sel}, key=int)),
                                                               ", oversubscribed" if over == "1" else ""))
        # The model's prediction at exactly each measured point's (mode, p, batch), ring fit.
        for r in pts:
            p_, gb = int(r["ranks"]), int(r["global_batch"])
            b_local = gb / p_
            t_ar = t_ring(p_, rm["gradient_bytes"], ring["alpha_s"], ring["beta_s_per_byte"])
            eff = (rm["t_sample_s"] * gb / (p_ * (rm["t_sample_s"] * b_local + t_ar)) if r["mode"] == "strong"
                   else rm["t_sample_s"] * b_local / (rm["t_sample_s"] * b_local + t_ar))
            ax.semilogx([p_], [eff], "x", color="C2", ms=7)
        if pts:
            ax.plot([], [], "x", color="C2", label="model at the measured points' p and batch")
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("nodes p (1 rank per node)"); ax.set_ylabel("parallel efficiency")
        ax.set_title("%s\nt_sample %.3g us, gradient %.1f MB" % (m["label"], 1e6 * rm["t_sample_s"], rm["gradient_bytes"] / 1e6),
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "commmodel.png"), dpi=100)
    print("commmodel: wrote %s/commmodel.json and %s/commmodel.png" % (out, out))


if __name__ == "__main__":
    main()
