"""Command-line arguments the ppd tools share, and the backend they describe."""
from __future__ import annotations

import argparse

from ppd_ros.constants import INFERENCE_AREA
from ppd_ros.model_specs import IMAGE_MODEL_NAMES
from ppd_ros.parameters import BACKEND_NAMES, PRECISIONS


def add_model_arguments(parser: argparse.ArgumentParser, default: str | None = "ppd-da2",
                        choices: tuple[str, ...] | None = None, model_help: str | None = None) -> None:
    """--model, --weights-dir, --device, --steps, --target-area, --seed."""
    names = choices or IMAGE_MODEL_NAMES
    parser.add_argument("--model", default=default, type=_model_argument(names), metavar="NAME|EXPORT.safetensors",
                        help=model_help or f"one of {', '.join(names)}, or the path of an exported model "
                                           "(ppd-train export)")
    parser.add_argument("--weights-dir", default=None, help="default: $PPD_WEIGHTS_DIR or ~/.cache/ppd_ros/weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--steps", type=int, default=4, help="Euler sampling steps")
    parser.add_argument("--target-area", type=int, default=None,
                        help=f"inference pixels (aspect kept); default: the model's own ({INFERENCE_AREA} for the "
                             "PPD models)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (reproducible output)")
    add_backend_arguments(parser)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend and its speed options (the node's parameters of the same names)."""
    parser.add_argument("--backend", default=None, choices=BACKEND_NAMES,
                        help="torch (default) or onnxruntime (after `ppd export-onnx`)")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="torch: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, bf16-autocast")
    parser.add_argument("--compile", action="store_const", const=True, default=None, help="torch.compile the networks")
    parser.add_argument("--cuda-graphs", action="store_const", const=True, default=None,
                        help="torch on CUDA: replay one CUDA graph per input size")
    parser.add_argument("--onnx-providers", default=None, type=lambda text: tuple(text.split(",")),
                        help="onnxruntime: providers in order, e.g. tensorrt,cuda,cpu (the default)")
    parser.add_argument("--onnx-dir", default=None, help="onnxruntime: folder of `ppd export-onnx`")


def backend_flags(args: argparse.Namespace) -> dict:
    """The backend flags the user gave, as node parameter values."""
    names = {"backend": "backend", "precision": "precision", "compile": "compile", "cuda_graphs": "cuda_graphs",
             "onnx_providers": "onnx_providers", "onnx_dir": "onnx_dir"}
    return {parameter: getattr(args, name) for name, parameter in names.items() if getattr(args, name) is not None}


def _model_argument(names: tuple[str, ...]):
    """argparse type: a model name of ``names`` or an exported model file."""
    from ppd_ros.model_specs import is_export_path

    def check(value: str) -> str:
        if value in names or is_export_path(value):
            return value
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(names)} nor the path of an exported "
                                         "model (NAME.safetensors with NAME.json beside it)")
    return check


def backend_from_args(args: argparse.Namespace):
    """The backend of ``--model`` and the options above."""
    from ppd_ros.backends import BackendOptions, create_backend
    from ppd_ros.model_specs import model_spec

    flags = backend_flags(args)
    options = BackendOptions(device=args.device, steps=args.steps, target_area=args.target_area, seed=args.seed,
                             weights_dir=args.weights_dir,
                             **{k: v for k, v in flags.items() if k != "backend"})
    return create_backend(model_spec(args.model), options, backend=flags.get("backend", "torch"))
