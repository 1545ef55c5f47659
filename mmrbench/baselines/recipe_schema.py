"""The detector recipes' schema: every value typed and bounded (pydantic v2, strict).

A string where a number belongs, a NaN, a layer that does not exist, or ``d = 100000`` (a 6.5 GB
covariance) fails when the recipe is read, before any weights load or an earlier run is touched.
Imported lazily by :func:`mmrbench.baselines.recipes.check_recipe` (pydantic is not needed to import
the package).
"""
from __future__ import annotations

from typing import Annotated, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

STRICT = ConfigDict(strict=True, extra="forbid")

Layer = Literal["layer1", "layer2", "layer3", "layer4"]
Layers = Annotated[List[Layer], Field(min_length=1, max_length=4)]
Seed = Annotated[int, Field(ge=0)]
ImageSize = Annotated[int, Field(ge=32, le=2048)]
BlurSigma = Annotated[float, Field(ge=0, le=64, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Chunk = Annotated[int, Field(ge=1, le=10**7)]


class Backbone(BaseModel):
    model_config = STRICT
    name: str
    seed: Seed
    weights: Optional[str] = None


class Boxes(BaseModel):
    model_config = STRICT
    min_area: Annotated[int, Field(ge=0, le=10**8)]
    nms_iou: Fraction


class Thresholds(BaseModel):
    model_config = STRICT
    holdout_fraction: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
    holdout_min: Annotated[int, Field(ge=0, le=10**6)]
    fair_quantile: Fraction


class PadimModel(BaseModel):
    model_config = STRICT
    layers: Layers
    d: Annotated[int, Field(ge=1, le=4096)]
    eps: Annotated[float, Field(gt=0, le=1e3, allow_inf_nan=False)]
    image_size: ImageSize
    blur_sigma: BlurSigma
    seed: Seed
    position_chunk: Optional[Chunk] = None


class PatchCoreModel(BaseModel):
    model_config = STRICT
    layers: Layers
    coreset_ratio: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    proj_dim: Annotated[int, Field(ge=1, le=4096)]
    coreset_precision: Literal["half", "single"]
    num_neighbors: Annotated[int, Field(ge=1, le=1000)]
    image_size: ImageSize
    blur_sigma: BlurSigma
    seed: Seed
    target_dim: Optional[Annotated[int, Field(ge=1, le=65536)]] = None
    coreset_max: Optional[Annotated[int, Field(ge=1)]] = None
    bank_chunk: Optional[Chunk] = None


class _Common(BaseModel):
    model_config = STRICT
    backbone: Backbone
    boxes: Boxes
    thresholds: Thresholds
    batch_size: Annotated[int, Field(ge=1, le=4096)]
    pixel_auroc_size: Annotated[int, Field(ge=8, le=4096)]
    normalisation: Literal["joint", "separate"]


class PadimRecipe(_Common):
    method: Literal["padim"]
    model: PadimModel


class PatchCoreRecipe(_Common):
    method: Literal["patchcore"]
    model: PatchCoreModel


def schema_for(method: str) -> Union[type[PadimRecipe], type[PatchCoreRecipe]]:
    return PadimRecipe if method == "padim" else PatchCoreRecipe
