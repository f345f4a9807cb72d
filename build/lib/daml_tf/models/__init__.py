"""Keras models of DAML: appearance encoder/decoder, motion models and the joint model.

`daml_tf.models.build` builds them from a config; new motion models register there.
"""

from daml_tf.models.daml import DAML
from daml_tf.models.decoder import AppearanceDecoder
from daml_tf.models.encoder import AppearanceEncoder
from daml_tf.models.motion import MotionModel

__all__ = ["DAML", "AppearanceDecoder", "AppearanceEncoder", "MotionModel"]
