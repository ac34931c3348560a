"""Models: the open_clip factory, the zero-shot head, the ImageClassifier and its checkpoints."""
