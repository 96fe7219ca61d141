"""The paper workflow: presets, data, the recipe, runs, the pipeline, Table 1 and plots."""
