"""Inference errors. Consumers retry `retriable` ones with backoff; the rest are permanent."""


class InferenceError(Exception):
    """Base class: permanent unless a subclass says otherwise."""

    retriable = False


class InputNotAccepted(InferenceError):
    """The study has no instance this model accepts (modality, body part, SOP class)."""


class CannotDecode(InferenceError):
    """The instance's pixel data cannot be read or decoded."""


class InputTooLarge(InferenceError):
    """An input object is over `inference_max_object_bytes`: the job fails rather than read it whole."""


class UnknownModel(InferenceError):
    """A model package cannot be had here: no files in object storage, no adapter for its framework, a
    builtin package not installed. (Which versions are registered is integration.models.registry's.)"""


class InferenceTimeout(InferenceError):
    """The job's work (preparing its inputs, running the model, postprocessing) took over
    `inference_timeout_seconds`; a runner still running it was killed."""


class ModelCrashed(InferenceError):
    """The model's runner process died (the out-of-memory killer, a crash in native code).

    Retriable: the next try starts a new runner, until the job has seen `inference_max_crashes`.
    """

    retriable = True


class LoadTimeout(ModelCrashed):
    """The model did not load within `inference_load_timeout_seconds`; its runner was killed.

    A hung load holds the worker as a crash loop would, so it counts as a crash.
    """


class TooManyCrashes(InferenceError):
    """The model's runner died `inference_max_crashes` times on one job (a poison input, a model that
    never loads): the job fails rather than holding its partition with retries forever."""


class ModelFailed(InferenceError):
    """The model raised an error of its own on this input (its framework's exception, named in the message)."""


class UnknownJob(InferenceError):
    """The request names a job that is not in the database; the router creates jobs before requesting them."""
