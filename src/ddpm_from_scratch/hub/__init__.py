"""The Hugging Face Hub: uploads (`upload`), model cards (`model_card`) and loading a PIPELINE argument (`loading`).

``ddpm_from_scratch.hub.push_pipeline_folder`` and the other public names stay importable from here.
"""

from .model_card import minimal_model_card, model_index_results, render_model_card, update_model_card
from .upload import HubUploadError, hub_upload_files, push_pipeline_folder

__all__ = ["HubUploadError", "hub_upload_files", "minimal_model_card", "model_index_results", "push_pipeline_folder",
           "render_model_card", "update_model_card"]
