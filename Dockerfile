# Images for the scorer (consumer) and the event producer, one build for both:
#   docker build --target consumer -t dnarisk-consumer .
#   docker build --target producer -t dnarisk-producer .
# docker-compose.yml builds both targets.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a source change does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/consumer ./cmd/producer

# Static binaries: no shell, no package manager, not root.
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /src/models /models
ENV MODEL_DIR=/models/default
USER nonroot:nonroot

FROM runtime AS producer
COPY --from=build /out/producer /usr/local/bin/producer
ENTRYPOINT ["/usr/local/bin/producer"]

FROM runtime AS consumer
COPY --from=build /out/consumer /usr/local/bin/consumer
ENTRYPOINT ["/usr/local/bin/consumer"]
