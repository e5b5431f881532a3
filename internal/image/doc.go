// Package image makes and keeps container images: read-only layer directories on the local
// disk, addressed by the hash of their definition. The base image (Image.debian_slim) is Debian
// bookworm made with debootstrap from Debian's packages; a snapshot adds the upper layer of a
// sandbox's overlay on top of its image. Imported by the server (building) and the worker
// (mounting).
package image
