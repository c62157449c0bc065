"""Config fields the built-in evaluators share, so each default and its doc is written once."""

from __future__ import annotations

import attrs

from jepa_core.api import validators as v


def encoder_choice():
    return attrs.field(default="target", validator=v.one_of("online", "target"))


def max_train_field():
    """Train images the head is fitted on (deterministic subsample; null: all)."""
    return attrs.field(default=1024, validator=attrs.validators.optional(v.positive_int))


def max_val_field():
    """Val images accuracy is measured on (deterministic subsample; null: all)."""
    return attrs.field(default=512, validator=attrs.validators.optional(v.positive_int))


def batch_size_field():
    """Images per feature-extraction batch."""
    return attrs.field(default=128, validator=v.positive_int)


def task_field():
    """Labelled task to classify (a dataset with several, e.g. shapes: shape, colour); null: the main label."""
    return attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str)))


def workers_field():
    """Loader workers (null: data.num_workers)."""
    return attrs.field(default=None, validator=attrs.validators.optional(v.non_negative_int))
