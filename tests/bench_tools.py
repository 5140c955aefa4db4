#!/usr/bin/python3
"""Tests of the benchmark tools' arithmetic: scripts/bench_report.py (FLOP count, per-run
summary, issue #6's target checks) and scripts/commmodel.py (the alpha-beta fit, the predicted
efficiency, and keeping each size's fastest launch). The tools measure; these tests feed them
made-up measurements whose right answers are worked out here independently.

  /usr/bin/python3 tests/bench_tools.py            (ctest: bench_tools)
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_report  # noqa: E402


def gemm_flops(layers):
    """FLOP per sample, counted GEMM by GEMM: per layer l the forward product W^l a^{l-1} and
    the weight gradient delta^l (a^{l-1})^T, n_l x n_{l-1} multiply-adds each; and the delta
    of the layer below, (W^l)^T delta^l, for every layer but the first (no delta of the input)."""
    total = 0
    for l in range(1, len(layers)):
        macs = layers[l] * layers[l - 1]
        total += 2 * macs  # forward
        total += 2 * macs  # dW
        if l > 1:
            total += 2 * macs  # delta of layer l-1
    return total


class BenchReport(unittest.TestCase):
    def test_flops_per_sample(self):
        for layers in ([784, 256, 128, 10], [1024, 4096, 4096, 1024], [3, 5], [7, 1, 9, 2, 4]):
            self.assertEqual(bench_report.flops_per_sample(layers)[0], gemm_flops(layers), layers)

    def test_summarize_leaves_epoch_1_out(self):
        batch = 100
        # epoch 1 is slow (first touch); epochs 2 and 3 at 1000 and 500 samples/s
        rows = [{"epoch": 1, "step": 10, "samples_per_s": 10.0, "time_compute_s": 50, "time_comm_s": 40,
                 "time_io_s": 5},
                {"epoch": 2, "step": 20, "samples_per_s": 1000.0, "time_compute_s": 0.6, "time_comm_s": 0.3,
                 "time_io_s": 0.05},
                {"epoch": 3, "step": 40, "samples_per_s": 500.0, "time_compute_s": 3.0, "time_comm_s": 0.5,
                 "time_io_s": 0.2}]
        s = bench_report.summarize(rows, batch)
        # epochs 2 and 3: 10 and 20 steps of 100 samples in 1 s and 4 s
        self.assertEqual(s["epochs_used"], 2)
        self.assertTrue(s["first_epoch_excluded"])
        self.assertAlmostEqual(s["samples_per_s"], 3000 / 5.0)
        self.assertEqual(s["steps"], 30)
        self.assertAlmostEqual(s["time_compute_per_step_s"], 3.6 / 30)
        self.assertAlmostEqual(s["time_comm_per_step_s"], 0.8 / 30)
        self.assertAlmostEqual(s["comm_fraction"], 0.8 / 5.0)
        self.assertAlmostEqual(s["time_other_per_step_s"], (5.0 - 3.6 - 0.8 - 0.25) / 30)
        one = bench_report.summarize(rows[:1], batch)  # a single epoch is kept
        self.assertEqual(one["epochs_used"], 1)
        self.assertAlmostEqual(one["samples_per_s"], 10.0)

    @staticmethod
    def runs(over=None):
        """Runs that meet every target by a margin; `over` ({(name, np): {key: value}}) changes
        one figure."""
        over = over or {}
        r = {
            ("wide-synth-b256", 2): {"eff_vs_sgemm": 0.90, "gflops": 180.0},
            ("wide-synth-b256", 1): {"eff_vs_sgemm": 0.92, "gflops": 95.0, "sgemm_ceiling_gflops": 100.0},
            ("fmnist-real-b128", 2): {"samples_per_s": 130000.0, "comm_fraction": 0.05},
            ("fmnist-real-b512", 2): {"samples_per_s": 160000.0, "par_eff": 0.93, "comm_fraction": 0.05},
            ("fmnist-real-b512", 1): {"samples_per_s": 86000.0},
        }
        out = []
        for (name, np_), fig in r.items():
            d = {"name": name, "np": np_, "samples_per_s": 1000.0, "memory": {"rank0_ratio": 1.02}}
            d.update(fig)
            d.update(over.get((name, np_), {}))
            out.append(d)
        return out

    def met(self, runs):
        return {t["target"].split(":")[0]: t["met"] for t in bench_report.targets(runs)}

    def test_targets_met(self):
        self.assertEqual(set(self.met(self.runs()).values()), {True})

    def test_each_target_can_fail(self):
        cases = [
            ({("wide-synth-b256", 2): {"eff_vs_sgemm": 0.84}}, "wide MLP -np 2"),
            ({("fmnist-real-b128", 2): {"samples_per_s": 119999.0}}, "fmnist MLP batch 128 -np 2"),
            ({("fmnist-real-b512", 2): {"par_eff": 0.89}}, "fmnist MLP batch 512, 1 -> 2 ranks"),
            ({("fmnist-real-b512", 2): {"comm_fraction": 0.11}}, "fmnist MLP batch 512 -np 2"),
            ({("fmnist-real-b128", 2): {"memory": {"rank0_ratio": 1.11}}}, "peak memory beyond the runtime's / buffers' account (worst run)"),
        ]
        for over, which in cases:
            got = self.met(self.runs(over))
            self.assertIs(got.pop(which), False, which)
            self.assertEqual(set(got.values()), {True}, which)

    def test_missing_case_is_not_judged(self):
        runs = [r for r in self.runs() if r["name"] != "wide-synth-b256"]
        self.assertIsNone(self.met(runs)["wide MLP -np 2"])

    def test_synthetic_stands_in_for_real(self):
        runs = [dict(r, name=r["name"].replace("real", "synth")) for r in self.runs()]
        t = {x["target"].split(":")[0]: x for x in bench_report.targets(runs)}
        self.assertEqual(t["fmnist MLP batch 128 -np 2"]["case"], "fmnist-synth-b128 -np 2")
        self.assertIs(t["fmnist MLP batch 128 -np 2"]["met"], True)


A, B = 2e-6, 1e-10  # the made-up allreduce: T(n) = A + B n seconds, n in bytes


def sizes(a=A, b=B, slow=lambda n: 1.0):
    """The made-up bench output from 4 B to 100 MB; slow(n) multiplies the time of size n."""
    out, n = [], 4
    while n <= 100e6:
        t = slow(n) * (a + b * n)
        out.append({"bytes": n, "calls_per_trial": 1, "trials": 3, "min_s": t, "median_s": t})
        n *= 2
    return out


class CommModel(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="nnmpi-commmodel-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def commmodel(self, *args, env=None):
        """Runs scripts/commmodel.py into DIR/out with no scaling CSVs; returns the finished
        process, the report (None when it failed) and the output directory."""
        out = os.path.join(self.tmp, "out")
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "commmodel.py"), "--out", out, "--scaling"] + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        rep = None
        if r.returncode == 0:
            with open(os.path.join(out, "commmodel.json")) as f:
                rep = json.load(f)
        return r, rep, out

    def run_model(self, *args, env=None):
        r, rep, out = self.commmodel(*args, env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return rep, out

    def bench_json(self, t_sample):
        """A bench.json whose -np 1 runs give t_sample seconds of compute per sample."""
        runs = []
        for layers, batch in (([784, 256, 128, 10], 512), ([1024, 4096, 4096, 1024], 256)):
            runs.append({"name": "x", "np": 1, "layers": layers, "steps": 10, "global_batch": batch,
                         "time_compute_per_step_s": t_sample * batch})
        path = os.path.join(self.tmp, "bench.json")
        with open(path, "w") as f:
            json.dump({"runs": runs}, f)
        return path

    def test_fit_and_prediction(self):
        ar = os.path.join(self.tmp, "allreduce.json")
        with open(ar, "w") as f:
            json.dump({"tool": "test", "ranks": 2, "sizes": sizes()}, f)
        t_sample = 10e-6
        rep, _ = self.run_model("--allreduce-json", ar, "--bench", self.bench_json(t_sample))
        fit = rep["fit"]
        # At p = 2: ring T = 2 alpha + n beta, so alpha = A / 2; recursive doubling alpha = A.
        self.assertAlmostEqual(fit["ring"]["alpha_s"] / (A / 2), 1.0, delta=0.01)
        self.assertAlmostEqual(fit["recursive_doubling"]["alpha_s"] / A, 1.0, delta=0.01)
        self.assertAlmostEqual(fit["ring"]["beta_s_per_byte"] / B, 1.0, delta=1e-6)
        m = rep["models"]["fmnist"]
        n_bytes = 4 * (784 * 256 + 256 * 128 + 128 * 10 + 256 + 128 + 10)
        self.assertEqual(m["gradient_bytes"], n_bytes)
        self.assertAlmostEqual(m["t_sample_s"], t_sample)
        for p in (2, 8, 64):
            t_ar = 2 * (p - 1) * fit["ring"]["alpha_s"] + 2 * (p - 1) / p * n_bytes * B
            t1 = t_sample * 128
            strong = t1 / (p * (t1 / p + t_ar))
            weak = t1 / (t1 + t_ar)
            self.assertAlmostEqual(m["prediction"]["ring"]["strong_eff"][p - 1], strong, places=9)
            self.assertAlmostEqual(m["prediction"]["ring"]["weak_eff"][p - 1], weak, places=9)
            t_rd = math.ceil(math.log2(p)) * (fit["recursive_doubling"]["alpha_s"] + n_bytes * B)
            self.assertAlmostEqual(m["prediction"]["recursive_doubling"]["weak_eff"][p - 1],
                                   t1 / (t1 + t_rd), places=9)
        self.assertEqual(m["prediction"]["ring"]["strong_eff"][0], 1.0)

    def run_stand_in(self, launches):
        """commmodel with a stand-in nnmpi-allreduce-bench that prints launches[k] at its k-th
        launch (one rank per launch, so it runs once per launch)."""
        bdir = os.path.join(self.tmp, "build")
        os.makedirs(bdir)
        for i, sz in enumerate(launches):
            with open(os.path.join(self.tmp, "launch%d.json" % i), "w") as f:
                json.dump({"tool": "fake", "ranks": 2, "sizes": sz}, f)
        fake = os.path.join(bdir, "nnmpi-allreduce-bench")
        with open(fake, "w") as f:  # the counter counts launches
            f.write("""#!/bin/bash
d=%s; k=$(cat "$d/count" 2>/dev/null || echo 0); echo $((k + 1)) > "$d/count"
cat "$d/launch$k.json"
""" % self.tmp)
        os.chmod(fake, 0o755)
        return self.commmodel("--np", "1", "--launches", str(len(launches)), "--bench", self.bench_json(10e-6),
                              env=dict(os.environ, NNMPI_BUILD_DIR=bdir))

    def test_keeps_each_sizes_fastest_launch(self):
        """A stand-in nnmpi-allreduce-bench whose launches are each 5x slow in a different range
        of sizes (the development VMs show whole slow launches; mixing the ranges makes only a
        per-size minimum right): the fit must come from the fast times, every launch be kept."""
        slow = (lambda n: 5.0 if n > 4096 else 1.0,               # launch 1: slow above 4 KiB
                lambda n: 5.0 if n <= 4096 else 1.0,              # launch 2: slow up to 4 KiB
                lambda n: 5.0 if 1 << 16 < n < 1 << 24 else 1.0)  # launch 3: slow in between
        r, rep, out = self.run_stand_in([sizes(slow=f) for f in slow])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(self.tmp, "count")) as f:
            self.assertEqual(f.read().strip(), "3")
        with open(os.path.join(out, "allreduce.json")) as f:
            ar = json.load(f)
        self.assertEqual(len(ar["launches"]), 3)
        self.assertEqual(len(ar["sizes"]), len(sizes()))
        for s, fast in zip(ar["sizes"], sizes()):
            self.assertAlmostEqual(s["min_s"], fast["min_s"])
            want = [f_slow(s["bytes"]) * fast["min_s"] for f_slow in slow]
            self.assertEqual(len(s["min_s_per_launch"]), 3)
            for got, w in zip(s["min_s_per_launch"], want):
                self.assertAlmostEqual(got, w)
        self.assertAlmostEqual(rep["fit"]["ring"]["beta_s_per_byte"] / B, 1.0, delta=1e-6)

    def test_launches_must_agree_on_sizes(self):
        r, _, _ = self.run_stand_in([sizes(), sizes()[:-1]])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("the launches of the allreduce bench measured different sizes", r.stderr)

    def test_launches_below_1_refused(self):
        r, _, _ = self.commmodel("--launches", "0")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("--launches must be 1 or more", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
