"""imgedit-ds: build image-editing training data as Hugging Face datasets."""
