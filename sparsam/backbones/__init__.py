"""timm backbones: creation, preprocessing, and the Hugging Face Hub format.

Being split into one module per job (issue 21); for now the whole of it lives in `save`.
"""

from .save import CONFIG_NAME as CONFIG_NAME
from .save import IMAGENET_MEAN as IMAGENET_MEAN
from .save import IMAGENET_STD as IMAGENET_STD
from .save import PAPER_CITATION as PAPER_CITATION
from .save import PAPER_CODE_URL as PAPER_CODE_URL
from .save import PAPER_MEAN as PAPER_MEAN
from .save import PAPER_STD as PAPER_STD
from .save import PAPER_WEIGHTS_URL as PAPER_WEIGHTS_URL
from .save import PICKLE_SUFFIXES as PICKLE_SUFFIXES
from .save import PRETRAINED_BACKBONES as PRETRAINED_BACKBONES
from .save import README_NAME as README_NAME
from .save import WEIGHTS_NAME as WEIGHTS_NAME
from .save import BackboneNotFoundError as BackboneNotFoundError
from .save import PretrainedBackbone as PretrainedBackbone
from .save import __all__ as __all__
from .save import backbone_data_config as backbone_data_config
from .save import convert_checkpoint as convert_checkpoint
from .save import create_backbone as create_backbone
from .save import load_backbone as load_backbone
from .save import push_backbone as push_backbone
from .save import save_backbone as save_backbone
