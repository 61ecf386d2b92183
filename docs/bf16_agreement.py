"""Argmax agreement of CPU bf16 autocast with the authors' reference outputs, per frame.

usage: python docs/bf16_agreement.py all|head32|tail32
  all: everything under bf16 autocast; head32: LayerNorm + head in fp32;
  tail32: attention propagation, LayerNorm and head in fp32.
"""
import pathlib, sys, torch, torch.nn.functional as F
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from conformance import check_frame, expected, key_listing, recipe_weights
from tdnet_cli.models import create_model, optimize_for_inference
mode = sys.argv[1]
for preset in ("td4-psp18", "td2-psp50"):
    ref = expected(preset)
    m = create_model(preset, input_size=(129, 257)).eval()
    m.load_state_dict(recipe_weights(key_listing(preset, small=True)))
    m = optimize_for_inference(m)
    if mode in ("head32", "tail32"):
        orig_decode, orig_fuse = m.decode, m.fuse
        def decode(feat, path):
            with torch.autocast("cpu", enabled=False):
                return orig_decode(feat.float(), path)
        def fuse(v, q, mem, path):
            with torch.autocast("cpu", enabled=False):
                return orig_fuse(v.float(), q.float(), tuple(type(x)(*(t.float() for t in x)) for x in mem), path)
        m.decode = decode
        if mode == "tail32": m.fuse = fuse
    s = m.new_state(); ags = []
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1,3,1,1); std = torch.tensor([0.229,0.224,0.225]).view(1,3,1,1)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(6):
            x = ((torch.from_numpy(ref['inputs'][i]).permute(2,0,1)[None].float()/255 - mean)/std).contiguous(memory_format=torch.channels_last)
            lg, s = m.step(x, s)
            up = F.interpolate(lg.float(), (129, 257), mode='bilinear', align_corners=True)[0]
            ags.append(check_frame(up, ref, i)['agree'])
    print(mode, preset, [round(a, 4) for a in ags])
