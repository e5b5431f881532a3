package image

import "time"

// Kinds of image.
const (
	KindDebianSlim = "debian_slim"
	KindSnapshot   = "snapshot"
)

// Image is an image as stored and shown to clients. Layers are directory paths on the worker's
// disk, lowest first; they are read-only once made.
type Image struct {
	ID        string    `json:"image_id"`
	Kind      string    `json:"kind"`
	ParentID  *string   `json:"parent_id"`
	Hash      string    `json:"-"`
	Layers    []string  `json:"-"`
	SizeBytes int64     `json:"size_bytes"`
	CreatedAt time.Time `json:"created_at"`
	// Env and Workdir are the defaults of every sandbox made from the image (Image.env,
	// Image.workdir); a sandbox's own settings win.
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	// Entrypoint is the image's declared entrypoint (Image.entrypoint, a Dockerfile's
	// ENTRYPOINT), kept as image metadata: sandboxes run the command they are created with.
	Entrypoint []string `json:"entrypoint,omitempty"`
	// User is who sandboxes of the image (and later build steps) run as; empty is root.
	User string `json:"user,omitempty"`
}
