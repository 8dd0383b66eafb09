"""Export: ultralytics export wrapper, TensorRT engine handling and the offline TensorRT compatibility check."""
