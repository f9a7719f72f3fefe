# temporary learnability sweep (deleted after use)
import os, sys, json, subprocess, time, tempfile
VARIANTS = {"final": {}}
def child(seed, recipe):
    import torch, torchvision
    from fgvc.data import synthetic, build_dataset
    from fgvc.data.transforms import eval_transform
    root = tempfile.mkdtemp() + "/d"
    synthetic.generate(root, classes=8, per_class=40 if recipe in 'ad' else 48, size=64, seed=seed)
    tr = build_dataset("synthbirds", root, "train", eval_transform(64), val_fraction=0.0 if recipe in "ad" else 0.1)
    te = build_dataset("synthbirds", root, "test", eval_transform(64))
    dev = "cuda" if torch.cuda.is_available() and recipe != "d" else "cpu"
    torch.set_num_threads(2)
    X = torch.stack([tr[i][0] for i in range(len(tr))]).to(dev); Y = torch.tensor(tr.targets, device=dev)
    Xt = torch.stack([te[i][0] for i in range(len(te))]).to(dev); Yt = torch.tensor(te.targets, device=dev)
    torch.manual_seed(seed)
    m = torchvision.models.resnet18(num_classes=8).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3 if recipe in 'ad' else 2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, {'a': [1000], 'b': [4], 'c': [10], 'd': [1000]}[recipe], 0.1)
    E = {'a': 30, 'b': 6, 'c': 15, 'd': 200}[recipe]
    t0 = time.time()
    accs = []
    for ep in range(E):
        m.train(); perm = torch.randperm(len(X), device=dev)
        for i in range(0, len(X), 32):
            idx = perm[i:i+32]; xb = X[idx].clone()
            flip = torch.rand(len(idx), device=dev) < 0.5; xb[flip] = xb[flip].flip(-1)
            loss = torch.nn.functional.cross_entropy(m(xb), Y[idx]); opt.zero_grad(); loss.backward(); opt.step()
        sched.step(); m.eval()
        with torch.no_grad(): accs.append(round((m(Xt).argmax(1) == Yt).float().mean().item(), 3))
        if recipe == 'd' and time.time() - t0 > 60: accs.append(f'{ep + 1} epochs in {time.time() - t0:.0f}s'); break
    print(json.dumps(accs))
if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(int(sys.argv[2]), sys.argv[3]); sys.exit()
    procs = {}
    for v, env in VARIANTS.items():
        for seed, recipe in [(0, "d")] + [(s, r) for r in "abc" for s in range(3)]:
            e = dict(os.environ, **env, OMP_NUM_THREADS="2")
            procs[(v, seed, recipe)] = subprocess.Popen([sys.executable, __file__, "child", str(seed), recipe], env=e, stdout=subprocess.PIPE, text=True)
            while sum(p.poll() is None for p in procs.values()) >= 8: time.sleep(0.2)
    for (v, seed, recipe), p in procs.items():
        out, _ = p.communicate(); a = json.loads(out.strip().splitlines()[-1])
        print(v, seed, recipe, a if recipe in "bd" else ([a[5], a[9], a[14]] if recipe == "c" else [a[5], a[9], a[19], a[29]]), flush=True)
