"""The base policy: a spec, backends (PI0 from transformers, the sim's scripted expert, replay), a
FastAPI server, a client and the chunk broker that keeps the control loop fed."""
