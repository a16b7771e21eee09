"""Shipping a trained model: the Keras run copy, the held-out reports and MODEL_CARD.md
(`specsr ship`), above export and evaluation, whose outputs it packages."""
