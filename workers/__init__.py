"""Ray execution of the pipeline's stages: chunk tasks and batched restore actors."""
