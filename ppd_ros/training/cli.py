"""``ppd-train``: LightningCLI front for training, plus ``ppd-train export``.

    ppd-train fit --config training/pretrain_hypersim_512.yaml
    ppd-train fit --config training/finetune_mix_1024x768.yaml --ckpt_path last      # resume
    ppd-train fit --config ... --trainer.devices 8 --trainer.num_nodes 2               # DDP
    ppd-train export runs/x/checkpoints/last.ckpt model/my_model.safetensors

Any config value can be overridden on the command line (``--model.lr 5e-5``), also a field of a
list entry (``--data.train.0.root /data/hypersim``). Without CUDA a ``bf16-mixed`` / ``16-mixed``
precision from a config falls back to fp32 (CPU runs, tests). Checkpoints (``--ckpt_path``) are
read with ``weights_only=True``: a crafted checkpoint cannot run code.
"""
from __future__ import annotations

import json
import pickle
import re
import sys
import warnings
from typing import Any

import torch
import yaml
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from ppd_ros.nets.checkpoints import CheckpointError
from ppd_ros.nets.exported import ExportError
from ppd_ros.training.datasets import DepthDataModule, SampleError
from ppd_ros.training.module import PPDTrainingModule
from ppd_ros.training.networks import ModelConfigError
from ppd_ros.training.safe_load import UnsafeCheckpointError

DEFAULT_SEED = 666  # the official recipe's seed
# a frozen semantic encoder stays in eval mode on purpose (PPDTrainingModule.train)
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=PossibleUserWarning)
USER_ERRORS = (ModelConfigError, ExportError, CheckpointError, UnsafeCheckpointError, SampleError, FileNotFoundError)


def _wants_cpu(trainer_config) -> bool:
    accelerator = str(trainer_config.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator in ("auto", "None") and not torch.cuda.is_available())


# --a.b.N.c VALUE: field c of entry N of the list a.b (jsonargparse alone would mis-parse it)
LIST_ENTRY_OPTION = re.compile(
    r"--(?P<list>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.(?P<index>\d+)\.(?P<field>[A-Za-z_][\w.]*)")


def split_list_entry_options(words: list[str]) -> tuple[list[str], list[tuple[str, int, str, str]]]:
    """(the other words, [(list key, index, field path, raw value)]) of a command line."""
    rest, entries = [], []
    i = 0
    while i < len(words):
        option, has_value, value = words[i].partition("=")
        match = LIST_ENTRY_OPTION.fullmatch(option)
        if match is None:
            rest.append(words[i])
            i += 1
            continue
        if not has_value:
            if i + 1 >= len(words):
                raise SystemExit(f"ppd-train: {option} needs a value")
            value = words[i + 1]
        i += 1 if has_value else 2
        entries.append((match["list"], int(match["index"]), match["field"], value))
    return rest, entries


def _plain(value: Any) -> Any:
    """jsonargparse Namespaces (e.g. callback entries) -> dicts, for a JSON list value."""
    return value.as_dict() if hasattr(value, "as_dict") else value


def expand_list_entry_options(parser, words: list[str]) -> list[str]:
    """Rewrite ``--a.b.N.c VALUE`` options into one ``--a.b '[...]'`` option holding the whole
    list (as given by the config files and the other options) with those fields set."""
    rest, entries = split_list_entry_options(words)
    if not entries:
        return words
    probe = [w for w in rest if not w.startswith(("--print_config", "-h", "--help"))]
    config = parser.parse_args(probe)
    prefix = f"{config.subcommand}." if config.get("subcommand") else ""
    lists: dict[str, list] = {}
    for key, index, field, raw in entries:
        if key not in lists:
            current = config.get(prefix + key)
            if not isinstance(current, list):
                raise SystemExit(f"ppd-train: --{key}.{index}.{field}: {key} is not a list "
                                 f"(it is {type(current).__name__})")
            lists[key] = [_plain(item) for item in current]
        entries_of_key = lists[key]
        if not 0 <= index < len(entries_of_key) or not isinstance(entries_of_key[index], dict):
            raise SystemExit(f"ppd-train: --{key}.{index}.{field}: {key} has {len(entries_of_key)} entries "
                             f"(0..{len(entries_of_key) - 1}), each a mapping")
        target = entries_of_key[index]
        *parents, leaf = field.split(".")
        for name in parents:
            target = target.setdefault(name, {})
        try:
            target[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError:
            target[leaf] = raw
    for key, value in lists.items():
        rest += [f"--{key}", json.dumps(value, default=str)]
    return rest


class PPDTrainCLI(LightningCLI):
    """LightningCLI with list-entry overrides, safe checkpoint loading and the CPU precision fallback."""

    def parse_arguments(self, parser, args) -> None:
        if isinstance(args, dict) or hasattr(args, "as_dict"):
            return super().parse_arguments(parser, args)
        words = sys.argv[1:] if args is None else list(args)
        self.config = parser.parse_args(expand_list_entry_options(parser, words))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if "weights_only" in config and config["weights_only"] is None:
            config["weights_only"] = True  # resume: torch's default would follow TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
        trainer = config.get("trainer")
        if trainer is None:
            return
        precision = str(trainer.get("precision"))
        if _wants_cpu(trainer) and ("16" in precision and "mixed" in precision):
            print(f"ppd-train: no CUDA device, precision {precision} -> 32-true", file=sys.stderr)
            trainer["precision"] = "32-true"


def run_cli(args: list[str] | None = None, run: bool = True) -> PPDTrainCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line (tests pass lists)."""
    return PPDTrainCLI(
        PPDTrainingModule,
        DepthDataModule,
        seed_everything_default=DEFAULT_SEED,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def _option_value(words: list[str], option: str) -> str | None:
    for i, word in enumerate(words):
        if word == option and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``ppd-train``."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words and words[0] == "export":
        from ppd_ros.training.export import main as export_main

        return export_main(words[1:])
    try:
        run_cli(argv)  # None: LightningCLI reads sys.argv itself
    except pickle.UnpicklingError as error:  # a --ckpt_path holding more than training state
        from ppd_ros.training.safe_load import refusal_message

        print(f"ppd-train: {refusal_message(_option_value(words, '--ckpt_path') or 'checkpoint', error)}",
              file=sys.stderr)
        return 2
    except USER_ERRORS as error:  # a config naming missing or mismatched files: one line, no traceback
        print(f"ppd-train: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
