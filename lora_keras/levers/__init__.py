"""The levers of a training run: options (`options`) and the chunked loss (`chunked_loss`)."""
