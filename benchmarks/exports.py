"""ONNX exports from PyTorch, for benchmarking on graphs as a user brings them (not our zoo's).

    python benchmarks/exports.py OUT_DIR        # needs torch (pip install torch==2.13.0), not mopar's venv

Writes, with seeded random weights (nothing is downloaded):
  minilm.onnx      a MiniLM-L6-sized BERT encoder (6 layers, hidden 384, 12 heads, 128 tokens), as
                   `torch.nn.TransformerEncoder` exports it;
  resnet50-pt.onnx ResNet-50 (bottleneck blocks, batch norm) as PyTorch exports it, unfolded;
  yolov3-tiny.onnx a YOLOv3-tiny detector (leaky ReLUs, max pools, two heads, an upsample and a concat).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


class MiniLM(nn.Module):
    def __init__(self, vocab: int = 30522, hidden: int = 384, layers: int = 6, heads: int = 12, tokens: int = 128):
        super().__init__()
        self.words = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(tokens, hidden)
        self.norm = nn.LayerNorm(hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        hidden = self.encoder(self.norm(self.words(input_ids) + self.positions(positions)))
        return torch.tanh(self.pooler(hidden[:, 0]))


class Bottleneck(nn.Module):
    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        out = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out),
        )  # fmt: skip
        self.skip = (
            nn.Sequential(nn.Conv2d(inputs, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or inputs != out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResNet50(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        ]  # fmt: skip
        inputs = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(inputs, width, stride if i == 0 else 1))
                inputs = 4 * width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def conv(inputs: int, outputs: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(outputs), nn.LeakyReLU(0.1)
    )


class YoloV3Tiny(nn.Module):
    def __init__(self, classes: int = 80) -> None:
        super().__init__()
        out = 3 * (5 + classes)
        self.early = nn.Sequential(
            conv(3, 16), nn.MaxPool2d(2, 2), conv(16, 32), nn.MaxPool2d(2, 2), conv(32, 64), nn.MaxPool2d(2, 2),
            conv(64, 128), nn.MaxPool2d(2, 2), conv(128, 256),
        )  # fmt: skip
        self.late = nn.Sequential(
            nn.MaxPool2d(2, 2), conv(256, 512), nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1),
            conv(512, 1024), conv(1024, 256, 1),
        )  # fmt: skip
        self.head1 = nn.Sequential(conv(256, 512), nn.Conv2d(512, out, 1))
        self.bridge = nn.Sequential(conv(256, 128, 1), nn.Upsample(scale_factor=2, mode="nearest"))
        self.head2 = nn.Sequential(conv(384, 256), nn.Conv2d(256, out, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        route = self.early(x)
        deep = self.late(route)
        return self.head1(deep), self.head2(torch.cat([self.bridge(deep), route], 1))


def export(model: nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str]) -> None:
    model.eval()
    with torch.no_grad():
        torch.onnx.export(
            model, (example,), str(path), input_names=inputs, output_names=outputs, opset_version=17, dynamo=False
        )
    print(f"wrote {path}")


def main(out: Path) -> None:
    torch.manual_seed(0)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel has no ONNX export; the layers do
    out.mkdir(parents=True, exist_ok=True)
    export(MiniLM(), torch.randint(0, 30522, (1, 128)), out / "minilm.onnx", ["input_ids"], ["pooled"])
    export(ResNet50(), torch.randn(1, 3, 224, 224), out / "resnet50-pt.onnx", ["input"], ["logits"])
    export(YoloV3Tiny(), torch.randn(1, 3, 416, 416), out / "yolov3-tiny.onnx", ["images"], ["coarse", "fine"])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/work/exports"))
