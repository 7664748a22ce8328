"""Backbones from keras.applications and kimm, built headless (`include_top=False`).

Every builder returns a functional model from an image `[H, W, 3]` to its last feature map. Built-in input
preprocessing is switched off wherever the API has the switch: the voxtrace front-end already normalises.
EfficientNetB0..B7 have no switch and always rescale their input by 1/255; they get the front-end's image
scaled by 255, otherwise their first BatchNorm sees a variance far below its epsilon and, trained from scratch,
its moving statistics take thousands of steps to catch up (inference-mode outputs collapse to one class).
ImageNet weights (`weights="imagenet"`) download through `keras.utils.get_file`; see `weights.py`.

Names kept for the reference's commands: `convnext_*_in22k` is the ConvNeXt architecture whose default
pretrain is ImageNet-21k; `RegNetZD8` (timm's RegNetZ-D8, ~23M parameters, ~4 GFLOPs) has no Keras port and
maps to kimm's `RegNetY040` (~21M parameters, ~4 GFLOPs), the RegNet of most similar cost.
"""

from __future__ import annotations

import functools

import keras
import kimm

from voxtrace.models.registry import register_alias, register_model

# name -> (keras.applications constructor, its built-in preprocessing: "switch" (can be turned off),
# "rescale_255" (always divides by 255) or None, inference batch hint per device or None)
KERAS_APPLICATIONS = {
    **{f"EfficientNetB{i}": (f"EfficientNetB{i}", "rescale_255", 32) for i in range(8)},
    **{f"EfficientNetV2{v}": (f"EfficientNetV2{v}", "switch", 32) for v in ["B0", "B1", "B2", "B3", "S", "M", "L"]},
    "ResNet50": ("ResNet50", None, None),
    "ResNet101": ("ResNet101", None, None),
    "ResNet152": ("ResNet152", None, None),
    "MobileNetV3Small": ("MobileNetV3Small", "switch", None),
    "MobileNetV3Large": ("MobileNetV3Large", "switch", None),
    **{f"convnext_{s}": (f"ConvNeXt{s.title()}", "switch", 16) for s in ["tiny", "small", "base", "large"]},
}

# name -> (kimm constructor, inference batch hint per device or None)
KIMM_MODELS = {
    **{f"RegNet{k}{c}": (f"RegNet{k}{c}", 32) for k in "XY"
       for c in ["002", "004", "006", "008", "016", "032", "040", "064", "080", "120", "160", "320"]},
    "resnet18": ("ResNet18", None),
}


def keras_application(input_shape, weights=None, *, constructor: str, preprocessing: str | None, **kwargs):
    """A headless keras.applications model that takes the front-end's normalised image as it is."""
    if preprocessing == "switch":
        kwargs["include_preprocessing"] = False
    model = getattr(keras.applications, constructor)(
        include_top=False, weights=weights, input_shape=tuple(input_shape), **kwargs
    )
    if preprocessing != "rescale_255":
        return model
    image = keras.Input(tuple(input_shape), name="image")
    return keras.Model(image, model(keras.layers.Rescaling(255.0, name="undo_rescale")(image)), name=model.name)


def kimm_model(input_shape, weights=None, *, constructor: str, **kwargs):
    """A headless kimm model (timm ports for Keras 3)."""
    return getattr(kimm.models, constructor)(
        input_shape=tuple(input_shape), include_preprocessing=False, include_top=False,
        weights=weights, **kwargs
    )


for _name, (_constructor, _preprocessing, _batch) in KERAS_APPLICATIONS.items():
    register_model(
        functools.partial(keras_application, constructor=_constructor, preprocessing=_preprocessing),
        name=_name, imagenet=True, family="keras.applications", batch_hint=_batch,
    )
for _name, (_constructor, _batch) in KIMM_MODELS.items():
    # kimm registers its model families but not their variants, which saved models refer to by class name.
    keras.saving.get_custom_objects().setdefault(_constructor, getattr(kimm.models, _constructor))
    register_model(functools.partial(kimm_model, constructor=_constructor), name=_name, imagenet=True,
                   family="kimm", batch_hint=_batch)

for _size in ["tiny", "small", "base", "large"]:
    register_alias(f"convnext_{_size}_in22k", f"convnext_{_size}", default_pretrain="imagenet21k")
register_alias("RegNetZD8", "RegNetY040")
