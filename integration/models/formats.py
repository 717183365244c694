"""Which model artifacts are in a legacy format: one whose loading runs code the package brings.

A Keras 3 `.keras` file loads in Keras's safe mode (no Lambda layers' bytecode, no arbitrary
classes), ONNX, XGBoost JSON/UBJSON and safetensors weights are data. Keras HDF5 (`.h5`) goes
through Keras's legacy loader, which safe mode does not cover; TorchScript (`torch.jit.load`)
runs the archive's code; both are refused unless an admin allows them for that version
(`POST /admin/models/{name}/{version}/allow-legacy-format`, integration.models.registry).
"""

_HDF5 = (".h5", ".hdf5")


def legacy_format(framework: str, artifact: str) -> str:
    """Why an artifact of this framework and file name is a legacy format ("" when it is not)."""
    if framework == "keras" and artifact.lower().endswith(_HDF5):
        return "Keras HDF5 (.h5) is loaded by Keras's legacy loader, outside its safe mode"
    if framework == "torch":
        return "TorchScript is loaded by torch.jit.load, which runs the archive's code"
    return ""
