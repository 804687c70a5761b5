"""The model side: the credential broker's proxying and metering, the host's login,
the dry run's scripted model and model-assisted planning."""
