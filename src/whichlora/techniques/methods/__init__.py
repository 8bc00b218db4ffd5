"""One module per technique or family of techniques: options, config builder, knob and hooks."""
