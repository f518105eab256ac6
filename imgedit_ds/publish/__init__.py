"""Publishing a finished run: push to the Hub with a dataset card, and export to files.

Everything here starts from a run's OUTPUT folder, so it can be retried without recomputing rows.
"""

from imgedit_ds.publish.export import EXPORTS, export_dataflow, export_imagefolder, export_output
from imgedit_ds.publish.hub import PublishError, prepare_push, push_output
from imgedit_ds.publish.validate import InvalidOutputError, validate_output

__all__ = [
    "EXPORTS",
    "InvalidOutputError",
    "PublishError",
    "export_dataflow",
    "export_imagefolder",
    "export_output",
    "prepare_push",
    "push_output",
    "validate_output",
]
