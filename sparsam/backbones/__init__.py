"""timm backbones: creation, preprocessing, and the Hugging Face Hub format.

A backbone on disk or on the Hub is a directory in timm's Hub format: ``config.json`` (the
architecture, the arguments that rebuild it and the preprocessing), ``model.safetensors`` and
a ``README.md`` model card. ``timm.create_model("hf-hub:org/name", pretrained=True)`` and
``timm.create_model("local-dir:/path", pretrained=True)`` load it without sparsam.

Weights are only ever read from safetensors. The one exception is ``convert_checkpoint``, which
reads the paper's original ``.pt`` state dicts with ``torch.load(weights_only=True)``.

One module per job: `registry` (the paper's backbones by short name, normalisations),
`hub_format` (file names, the markers of sparsam's files, ``BackboneNotFoundError``),
`create` (``create_backbone``, ``backbone_data_config``), `save` (``save_backbone``),
`model_card` (the README.md it writes), `load` (``load_backbone``), `hub_download` (files
through the Hugging Face cache), `convert` (``convert_checkpoint``) and `push`
(``push_backbone``).
"""

# The constants imported "as" themselves are not in __all__ but stay importable from here, as
# they were when sparsam.backbones was one module.
from .convert import convert_checkpoint
from .create import backbone_data_config, create_backbone
from .hub_format import CONFIG_NAME as CONFIG_NAME
from .hub_format import README_NAME as README_NAME
from .hub_format import WEIGHTS_NAME as WEIGHTS_NAME
from .hub_format import BackboneNotFoundError
from .load import PICKLE_SUFFIXES as PICKLE_SUFFIXES
from .load import load_backbone
from .push import push_backbone
from .registry import IMAGENET_MEAN as IMAGENET_MEAN
from .registry import IMAGENET_STD as IMAGENET_STD
from .registry import PAPER_CITATION as PAPER_CITATION
from .registry import PAPER_CODE_URL as PAPER_CODE_URL
from .registry import PAPER_MEAN as PAPER_MEAN
from .registry import PAPER_STD as PAPER_STD
from .registry import PAPER_WEIGHTS_URL as PAPER_WEIGHTS_URL
from .registry import PRETRAINED_BACKBONES, PretrainedBackbone
from .save import save_backbone

__all__ = [
    "PRETRAINED_BACKBONES",
    "BackboneNotFoundError",
    "PretrainedBackbone",
    "backbone_data_config",
    "convert_checkpoint",
    "create_backbone",
    "load_backbone",
    "push_backbone",
    "save_backbone",
]
