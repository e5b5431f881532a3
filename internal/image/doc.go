// Package image makes and keeps container images: read-only layer directories on the local
// disk, addressed by the hash of their definition. The base image (Image.debian_slim) is Debian
// bookworm made with debootstrap from Debian's packages; a snapshot adds the upper layer of a
// sandbox's overlay on top of its image.
//
// Imported by the control plane (building and resolving images), the store (it keeps their
// records), the worker (mounting layers, snapshots) and cmd/gust (`gust up` makes the builder;
// the benchmarks build the base). Never by gust-init or the SDKs.
package image
