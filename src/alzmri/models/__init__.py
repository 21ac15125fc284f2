"""Model zoo: plain ``nn.Module``s behind a timm-style registry.

Every architecture module is imported here so its ``@register_model`` builders always run.
"""

from alzmri.models import liu_cnn, monai_nets, slice_nets, video_resnet  # noqa: F401  (registers models)
from alzmri.models.registry import count_parameters, create_model, list_models, model_info

__all__ = ["count_parameters", "create_model", "list_models", "model_info"]
