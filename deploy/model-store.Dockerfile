# The model store as an image, for deploy/kubernetes/components/store-from-image: an init container
# copies /store into each pod's model-store volume. Build context: the store itself, e.g.
#   make export && docker build -f deploy/model-store.Dockerfile -t servebench/model-store:0.1.0 model_store
FROM busybox:1.37.0
COPY --chown=10001:10001 . /store/
USER 10001:10001
# Not a service: the init container runs `cp` and exits.
HEALTHCHECK NONE
CMD ["ls", "/store"]
