"""Checks that the synthetic set is learnable but not trivial (run by hand, not in CI).

  build/data/vit-data synthetic --output /tmp/syn
  python bench/data/synthetic_learnability.py /tmp/syn [seconds=110]

Trains a tiny ViT (patch 4, width 64, depth 3, 4 heads) on 2 CPU threads with pad-crop + flip
for a fixed wall-clock budget and prints eval accuracy; also prints the accuracy of a
pixel-level nearest-class-mean classifier (should be well below the ViT's).
"""
import sys, time
import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F

root = sys.argv[1] + "/cifar-10-batches-bin"
budget = float(sys.argv[2]) if len(sys.argv) > 2 else 110.0
torch.set_num_threads(2)
torch.manual_seed(0)

def load(files):
    raw = np.concatenate([np.fromfile(f"{root}/{f}", dtype=np.uint8) for f in files]).reshape(-1, 3073)
    return torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy()), torch.from_numpy(raw[:, 0].astype(np.int64))

xtr, ytr = load([f"data_batch_{i}.bin" for i in range(1, 6)])
xte, yte = load(["test_batch.bin"])
mean, std = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1), torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
norm = lambda x: (x.float() / 255 - mean) / std

centroids = torch.stack([xtr[ytr == k].float().mean(0) for k in range(10)]).view(10, -1)
pred = torch.cdist(xte.float().view(len(xte), -1), centroids).argmin(1)
print(f"nearest class-mean (pixels) accuracy: {(pred == yte).float().mean():.3f}")

class ViT(nn.Module):
    def __init__(s, d=64, depth=3, heads=4, p=4):
        super().__init__()
        s.embed = nn.Conv2d(3, d, p, p)
        s.cls = nn.Parameter(torch.zeros(1, 1, d))
        s.pos = nn.Parameter(torch.randn(1, 1 + (32 // p) ** 2, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, 0.0, batch_first=True, norm_first=True, activation="gelu")
        s.enc = nn.TransformerEncoder(layer, depth)
        s.norm, s.head = nn.LayerNorm(d), nn.Linear(d, 10)
    def forward(s, x):
        x = s.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([s.cls.expand(len(x), -1, -1), x], 1) + s.pos
        return s.head(s.norm(s.enc(x))[:, 0])

def augment(x):
    x = F.pad(x, (4, 4, 4, 4))
    i, j = np.random.randint(0, 9, 2)
    x = x[:, :, i:i + 32, j:j + 32]
    return torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(3), x)

model = ViT()
opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=0.05)
start, step, epoch = time.time(), 0, 0
while time.time() - start < budget:
    for idx in torch.randperm(len(xtr)).split(128):
        if time.time() - start > budget: break
        loss = F.cross_entropy(model(norm(augment(xtr[idx]))), ytr[idx])
        opt.zero_grad(); loss.backward(); opt.step(); step += 1
    epoch += 1
with torch.no_grad():
    acc = (model(norm(xte)).argmax(1) == yte).float().mean()
print(f"tiny ViT: {step} steps ({epoch} epochs) in {time.time() - start:.0f} s, eval accuracy {acc:.3f}")
