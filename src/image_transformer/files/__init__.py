"""Bytes on disk <-> tensors and models: image files, data sets, run checkpoints, pretrained folders and the
shipped models' folders. Nothing here trains or samples."""
