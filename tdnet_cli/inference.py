"""Frame-level inference: uint8 RGB frames in, train-id label maps out.

`Predictor` wraps a streaming segmentation model with the preprocessing its weights
expect (resize to the model input, normalise) and the post-processing users want
(logits resized back to the frame size, bilinear, then argmax). It is the one object
that `segment`, `eval` and `bench` drive.

STATUS: interface stub; the implementation lands with the core models (issue 2).
"""
