"""GPU architecture and recipe search for issue 18: the exact driver of the 2026-12-04 H200 runs (docs/RESULTS.md).

Phase A: candidate architectures (BN, a few LN) for EA epochs + short probes, all at once.
Phase B: the best candidate with BN, LN, GN x seeds 0, 1 for as many epochs as both the CPU
limit (60 min) and the remaining device time allow.
"""
import json, math, os, subprocess, sys, tarfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

T0 = time.time()
END = T0 + float(os.environ.get("BUDGET_S", 540))
OUT = Path(os.environ.get("OUT", "/tmp/out")); OUT.mkdir(parents=True, exist_ok=True)
RUNS = Path(os.environ.get("RUNS", "/tmp/runs")); DATA = os.environ.get("DATA", "/tmp/data")
DEVICE = os.environ.get("DEVICE", "cuda"); SCALE = float(os.environ.get("SCALE", 1))
EXTRA = os.environ.get("EXTRA", "").split()  # e.g. "--subset 50" for a local dry run
COMPILE = os.environ.get("COMPILE", "1") == "1"
EA = int(os.environ.get("EA", 20))
# epochs that fit 60 min on the 2-core CPU in fp32 eager (3300 s of training, s9 at 1150 img/s x measured ratio)
E_CPU = {"d1": 42, "d2": 39, "r1": 47, "r2": 61, "r3": 48, "s9": 75}
LOG = open(OUT / "log.txt", "a")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def log(*a):
    line = f"[{time.time() - T0:6.1f}s] " + " ".join(map(str, a))
    print(line, flush=True); LOG.write(line + "\n"); LOG.flush()


def ep(e):
    return max(1, round(e * SCALE, 2)) if SCALE != 1 else e


def train(name, args, compile_=COMPILE):
    cmd = [sys.executable, "-m", "cifarnet", "train", "--name", name, "--runs-dir", str(RUNS), "--data-dir", DATA,
           "--quiet", "--device", DEVICE, "--threads", "1", *args, *EXTRA] + (["--compile"] if compile_ else [])
    env = {**os.environ, "CIFARNET_COMPILE_MODE": "reduce-overhead" if DEVICE == "cuda" else ""}
    t = time.time()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parent,
                              timeout=max(5, END - time.time()))
    except subprocess.TimeoutExpired:
        log(f"{name}: killed at the deadline"); return None
    status = json.loads((RUNS / name / "status.json").read_text()) if (RUNS / name / "status.json").exists() else {}
    res = json.loads((RUNS / name / "results.json").read_text()) if (RUNS / name / "results.json").exists() else {}
    log(f"{name}: {status.get('status')} acc={res.get('test_acc')} tta={res.get('tta_acc')} wall={time.time() - t:.0f}s "
        f"err={str(status.get('error'))[:300]} {done.stderr.strip()[-300:] if done.returncode else ''}")
    if status.get("status") == "failed" and compile_ and "compile" in str(status.get("error")).lower():
        import shutil; shutil.rmtree(RUNS / name, ignore_errors=True)
        log(f"{name}: retry without compile")
        return train(name, args, compile_=False)
    return res.get("test_acc")


def img_s(name):
    try:
        recs = [json.loads(l) for l in (RUNS / name / "metrics.jsonl").read_text().splitlines() if l.strip()]
    except OSError:
        return None
    speeds = sorted(r["img_s"] for r in recs if r.get("kind") == "eval" and r.get("img_s"))
    return speeds[len(speeds) // 2] if speeds else None


def table(names, path):
    lines = ["| run | final acc | flip-TTA | best | epochs | elapsed s | img/s |", "|---|---|---|---|---|---|---|"]
    for n in names:
        try:
            r = json.loads((RUNS / n / "results.json").read_text())
        except OSError:
            lines.append(f"| {n} | - | - | - | - | - | {img_s(n)} |"); continue
        lines.append(f"| {n} | {100 * r['test_acc']:.2f} | {100 * (r.get('tta_acc') or 0):.2f} | "
                     f"{100 * r['best_eval_acc']:.2f} | {r['epochs']:g} | {r['elapsed_s']:.0f} | {img_s(n) or 0:.0f} |")
    Path(path).write_text("\n".join(lines) + "\n"); log("\n" + "\n".join(lines))


def pack(names, path, models):
    with tarfile.open(path, "w:gz") as tar:
        for n in names:
            for f in (RUNS / n).glob("*") if (RUNS / n).is_dir() else []:
                if f.name in ("last.pt", "best.pt") or (f.name == "model.pt" and not models):
                    continue
                tar.add(f, arcname=f"{n}/{f.name}")


B = ["--batch-size", "128", "--lr", "0.1"]
LONG = {f"{a}-{n}-e{EA}{'-cut' if c else ''}": ["--arch", a, "--norm", n, "--epochs", str(ep(EA)), *B]
        + (["--cutout"] if c else []) for a, n, c in
        [("d1", "bn", 0), ("r1", "bn", 0), ("r2", "bn", 0), ("r3", "bn", 0), ("d1", "ln", 0), ("r1", "ln", 0),
         ("d1", "bn", 1)]}
SHORT = {f"{a}-bn-e{e}": ["--arch", a, "--norm", "bn", "--epochs", str(ep(e)), *B]
         for a, e in [("s9", 10), ("r2", 10), ("r1", 8), ("s9", 3), ("r2", 3)]}


def phase_a():
    jobs = {**LONG, **SHORT}
    with ThreadPoolExecutor(len(jobs)) as pool:
        accs = dict(zip(jobs, pool.map(lambda kv: train(kv[0], kv[1]), jobs.items())))
    table(list(jobs), OUT / "phaseA.md"); pack(list(jobs), OUT / "phaseA.tgz", models=False)
    return accs


def choose(accs):
    scores = {}
    for a in ("d1", "d2", "r1", "r2", "r3"):
        acc = accs.get(f"{a}-bn-e{EA}")
        if acc:
            scores[a] = 100 * acc + 1.5 * math.log2(E_CPU[a] / 45)
    log("scores", scores)
    if not scores:
        return None, False
    w = max(scores, key=scores.get)
    cut = (accs.get(f"d1-bn-e{EA}-cut") or 0) > (accs.get(f"d1-bn-e{EA}") or 1) + 0.002
    return w, cut


def phase_b_fixed(w, cut, e, seeds=(0, 1)):
    jobs = {f"{w}-{n}-e{e}{'-cut' if cut else ''}{'-seed1' if s else ''}":
            ["--arch", w, "--norm", n, "--epochs", str(ep(e)), "--seed", str(s), *B] + (["--cutout"] if cut else [])
            for s in seeds for n in ("bn", "ln", "gn")}
    probes = {"r2-bn-e12": ["--arch", "r2", "--norm", "bn", "--epochs", str(ep(12)), *B],
              "r2-bn-e12-seed1": ["--arch", "r2", "--norm", "bn", "--epochs", str(ep(12)), "--seed", "1", *B],
              "r2-bn-e12-b256": ["--arch", "r2", "--norm", "bn", "--epochs", str(ep(12)), "--batch-size", "256",
                                 "--lr", "0.2"],
              "s9-bn-e4": ["--arch", "s9", "--norm", "bn", "--epochs", str(ep(4)), *B],
              "r2-bn-e4": ["--arch", "r2", "--norm", "bn", "--epochs", str(ep(4)), *B]}
    everything = {**jobs, **probes}
    with ThreadPoolExecutor(len(everything)) as pool:
        list(pool.map(lambda kv: train(kv[0], kv[1]), everything.items()))
    table(list(probes), OUT / "probes.md"); pack(list(probes), OUT / "probes.tgz", models=False)
    table(list(jobs), OUT / "phaseB.md"); pack(list(jobs), OUT / "phaseB.tgz", models=True)


def phase_b(w, cut, accs):
    speed_a = img_s(f"{w}-bn-e{EA}") or 2000
    n_a = len(LONG) + 2  # long runs plus the short ones that overlapped part of the time
    left = END - time.time() - 40
    runs = [(n, s) for s in (0, 1) for n in ("bn", "ln", "gn")]
    while True:
        per_run = speed_a * n_a / len(runs) * 0.75
        e_fit = int((left - 45) * per_run / 50000)  # 45 s: compile and data loading
        e = min(E_CPU[w], e_fit)
        if e >= 30 or len(runs) == 3:
            break
        runs = runs[:3]
    e = max(int(ep(e)), 1) if SCALE != 1 else e
    log(f"phase B: {w} cutout={cut} epochs={e} runs={runs} speed_a={speed_a:.0f} left={left:.0f}s e_fit={e_fit}")
    jobs = {f"{w}-{n}-e{e}{'-cut' if cut else ''}{'-seed1' if s else ''}":
            ["--arch", w, "--norm", n, "--epochs", str(e), "--seed", str(s), *B] + (["--cutout"] if cut else [])
            for n, s in runs}
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda kv: train(kv[0], kv[1]), jobs.items()))
    table(list(jobs), OUT / "phaseB.md"); pack(list(jobs), OUT / "phaseB.tgz", models=True)


if __name__ == "__main__":
    log("start", os.environ.get("PHASE"))
    if os.environ.get("PHASE", "A") == "A":
        log("choice", choose(phase_a()))
    else:
        phase_b_fixed(os.environ["W"], os.environ.get("CUT") == "1", int(os.environ["E"]))
    log("done")
