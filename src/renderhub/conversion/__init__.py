"""The model-conversion process: ARR's input formats in, a binary glTF `.arrAsset` and its reports out."""
