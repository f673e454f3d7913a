#!/usr/bin/env python3
"""Per-channel weight ranges of a lowbit mobilenet checkpoint's depthwise convs, BatchNorm folded.

  /usr/bin/python3 bench/probes/mobilenet_dw_ranges.py runs/mobilenet-mnist-fp32/checkpoint.safetensors

For each blocks.i.depthwise: the folded weight w·γ/√(σ² + 1e-5) per channel, the spread of the
channels' max|w|, and how much of it a per-tensor int8 step (max|w|/127) rounds to 0 — why
per-tensor weights do or do not hurt (docs/mobilenet.md). Needs numpy.
"""
import json
import struct
import sys
import numpy as np
p=sys.argv[1]
d=open(p,'rb').read(); n=struct.unpack('<Q',d[:8])[0]; h=json.loads(d[8:8+n]); body=d[8+n:]
def get(k):
    e=h[k]; b,e2=e['data_offsets']; return np.frombuffer(body[b:e2],dtype='<f4').reshape(e['shape'])
pre='model.' if any(k.startswith('model.') for k in h) else ''
for i in range(6):
    k=f'{pre}blocks.{i}.depthwise.0.weight'
    w=get(k); g=get(f'{pre}blocks.{i}.depthwise.1.weight'); v=get(f'{pre}blocks.{i}.depthwise.1.runningVar')
    f=w.reshape(w.shape[0],-1)*(g/np.sqrt(v+1e-5))[:,None]
    r=np.abs(f).max(1)
    s=r.max()/127
    zeroed=(np.abs(f)<s/2).mean()
    print(f"blocks.{i}.depthwise: {w.shape[0]} channels, folded max|w| per channel {r.min():.3g}..{r.max():.3g} (ratio {r.max()/r.min():.0f}), per-tensor int8 step {s:.3g}: {100*zeroed:.1f}% of weights round to 0, {int((r<s/2).sum())} channels entirely")
