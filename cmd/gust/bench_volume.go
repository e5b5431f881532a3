package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gust-run/gust/internal/reaper"
	"github.com/gust-run/gust/internal/volume"
)

func init() {
	register(&command{name: "bench volume", summary: "benchmark Volume writes, commits, reads and mounts against the worker's disk", run: runBenchVolume})
}

// runBenchVolume starts gust in this process and measures, beside a plain write and read of
// the same files on the worker's disk in the same run: writing files into a mounted Volume in
// a sandbox and committing them, then reading them in another sandbox that mounts the new
// version; and the time to start a sandbox that mounts a Volume of many small files (its
// first mount materializes the version; later ones find it cached).
func runBenchVolume(ctx context.Context, args []string) error {
	fs := newFlags("bench volume")
	mib := fs.Int("mib", 1024, "MiB to write")
	files := fs.Int("files", 64, "files the MiB are split into")
	small := fs.Int("small", 10000, "files of the Volume whose mount is timed")
	imageCache := fs.String("image-cache", envOr("GUST_IMAGE_CACHE", "/var/lib/gust/layers"), "image layer cache (the base image is built there if missing); volume blobs go beside it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *files < 1 || *mib < 1 || *small < 1 {
		return errors.New("bench volume: -mib, -files and -small must be at least 1")
	}
	b, stop, err := startSandboxBench(ctx, *imageCache, 1)
	if err != nil {
		return err
	}
	defer stop()
	c := b.c
	per := int64(*mib) << 20 / int64(*files)
	total := per * int64(*files)
	// Each file is a distinct repeated line, so that no two share a blob.
	script := func(dir string) string {
		return fmt.Sprintf(`for i in $(seq 1 %d); do yes "file $i" | head -c %d > %s/f$i || exit 1; done`, *files, per, dir)
	}
	cleanup := &benchVolumeCleanup{blobs: volume.BlobsIn(*imageCache)}
	defer cleanup.run(c)

	fmt.Printf("\ngust bench volume: %d MiB in %d files, a Volume of %d files, 2-core machine, %s\n\n", *mib, *files, *small, time.Now().Format(time.RFC3339))

	// The baseline: the same writes and reads on the worker's disk, by the same shell.
	plain := filepath.Join(c.tmp, "plain")
	if err := os.MkdirAll(plain, 0o755); err != nil {
		return err
	}
	// Each timed write starts with nothing dirty: writeback left by the last one would slow it.
	if err := hostShell("sync"); err != nil {
		return err
	}
	t0 := time.Now()
	if err := hostShell(script(plain)); err != nil {
		return err
	}
	baseWrite := time.Since(t0)
	if err := cleanup.expectFiles(plain); err != nil {
		return err
	}
	t0 = time.Now()
	if err := hostShell("test $(cat " + plain + "/f* | wc -c) = " + strconv.FormatInt(total, 10)); err != nil {
		return err
	}
	baseRead := time.Since(t0)

	// gust: write in one sandbox, commit; read in another that mounts the new version.
	vid, err := cleanup.volume(c, "bench-volume")
	if err != nil {
		return err
	}
	mount := []map[string]any{{"path": "/data", "volume_id": vid}}
	sb, err := c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID, "cpu": 2, "memory": 16384, "volumes": mount})
	if err != nil {
		return err
	}
	if err := hostShell("sync"); err != nil {
		return err
	}
	t0 = time.Now()
	if _, err := c.execFirstOutput(sb, "sh", "-c", script("/data")); err != nil {
		return err
	}
	gustWrite := time.Since(t0)
	t0 = time.Now()
	// reload_volumes commits what the sandbox wrote, then mounts the new version.
	if err := c.json("POST", "/v1/sandboxes/"+sb+"/volumes/reload", nil, nil); err != nil {
		return err
	}
	gustCommit := time.Since(t0)
	if err := c.terminate(sb); err != nil {
		return err
	}
	cleanup.version(c, vid)
	sb, err = c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID, "cpu": 2, "memory": 16384, "volumes": mount})
	if err != nil {
		return err
	}
	t0 = time.Now()
	if _, err := c.execFirstOutput(sb, "sh", "-c", "test $(cat /data/f* | wc -c) = "+strconv.FormatInt(total, 10)); err != nil {
		return fmt.Errorf("reading the committed files in another sandbox: %w", err)
	}
	gustRead := time.Since(t0)
	if err := c.terminate(sb); err != nil {
		return err
	}

	mibs := func(d time.Duration) float64 { return float64(total) / (1 << 20) / d.Seconds() }
	fmt.Printf("%-52s %12s %12s %8s\n", "measurement", "gust", "plain disk", "ratio")
	fmt.Printf("%-52s %9.0f MiB/s %9.0f MiB/s %7.2f×\n", "write in a container (no commit)", mibs(gustWrite), mibs(baseWrite), baseWrite.Seconds()/gustWrite.Seconds())
	fmt.Printf("%-52s %9.0f MiB/s %9.0f MiB/s %7.2f×   (target ≥ 0.7×)\n", "write + commit", mibs(gustWrite+gustCommit), mibs(baseWrite), baseWrite.Seconds()/(gustWrite+gustCommit).Seconds())
	fmt.Printf("%-52s %9.0f MiB/s %9.0f MiB/s %7.2f×\n", "read in another container after the commit", mibs(gustRead), mibs(baseRead), baseRead.Seconds()/gustRead.Seconds())
	fmt.Printf("%-52s %10.2f s\n", "  of which the commit", gustCommit.Seconds())

	// Mount time: a Volume of many small files.
	vid2, err := cleanup.volume(c, "bench-volume-small")
	if err != nil {
		return err
	}
	for i := 1; i <= *small; i++ {
		cleanup.expect([]byte(strconv.Itoa(i) + "\n"))
	}
	mount2 := []map[string]any{{"path": "/data", "volume_id": vid2}}
	sb, err = c.createWith(map[string]any{"app_id": b.appID, "image_id": b.imageID, "volumes": mount2})
	if err != nil {
		return err
	}
	smallScript := func(dir string) string {
		return fmt.Sprintf(`mkdir %s/d && cd %s/d && for i in $(seq 1 %d); do echo "$i" > f$i; done`, dir, dir, *small)
	}
	// The baseline: the same files written on the worker's disk, then synced.
	if err := hostShell("sync"); err != nil {
		return err
	}
	t0 = time.Now()
	if err := hostShell(smallScript(plain) + " && sync"); err != nil {
		return err
	}
	baseSmall := time.Since(t0)
	t0 = time.Now()
	if _, err := c.execFirstOutput(sb, "sh", "-c", smallScript("/data")); err != nil {
		return err
	}
	if err := c.json("POST", "/v1/sandboxes/"+sb+"/volumes/reload", nil, nil); err != nil {
		return err
	}
	gustSmall := time.Since(t0)
	fmt.Printf("%-52s %10.2f s %10.2f s %7.2f×   (plain: written, then sync)\n", fmt.Sprintf("%d small files: write + commit", *small), gustSmall.Seconds(), baseSmall.Seconds(), baseSmall.Seconds()/gustSmall.Seconds())
	if err := c.terminate(sb); err != nil {
		return err
	}
	head := cleanup.version(c, vid2)
	// The reload above materialized the version on this worker: forget it, for a first mount.
	if err := os.RemoveAll(filepath.Join(filepath.Dir(cleanup.blobs.Dir), "cache", head)); err != nil {
		return err
	}
	check := []string{"sh", "-c", fmt.Sprintf("test $(ls /data/d | wc -l) = %d", *small)}
	// startWith times create → the first exec's exit, then checks what the sandbox sees.
	startWith := func(req map[string]any, argv []string) (time.Duration, error) {
		t0 := time.Now()
		id, err := c.createWith(req)
		if err != nil {
			return 0, err
		}
		_, err = c.execFirstOutput(id, "true")
		d := time.Since(t0)
		if err == nil && argv != nil {
			_, err = c.execFirstOutput(id, argv...)
		}
		if terr := c.terminate(id); err == nil {
			err = terr
		}
		return d, err
	}
	bare := map[string]any{"app_id": b.appID, "image_id": b.imageID, "memory": 512}
	withVol := map[string]any{"app_id": b.appID, "image_id": b.imageID, "memory": 512, "volumes": mount2}
	base, err := startWith(bare, nil)
	if err != nil {
		return err
	}
	cold, err := startWith(withVol, check)
	if err != nil {
		return err
	}
	warm, err := startWith(withVol, check)
	if err != nil {
		return err
	}
	fmt.Printf("\n%-52s %12s %12s %8s\n", "sandbox create → first exec exits", "with volume", "no volume", "ratio")
	fmt.Printf("%-52s %9.0f ms %9.0f ms %7.2f×\n", fmt.Sprintf("%d-file volume, first mount on this worker", *small), ms64(cold), ms64(base), cold.Seconds()/base.Seconds())
	fmt.Printf("%-52s %9.0f ms %9.0f ms %7.2f×\n", fmt.Sprintf("%d-file volume, version cached", *small), ms64(warm), ms64(base), warm.Seconds()/base.Seconds())
	return nil
}

func ms64(d time.Duration) float64 { return float64(d) / 1e6 }

// hostShell runs a shell script on this machine, for the baselines.
func hostShell(script string) error {
	out, err := reaper.CombinedOutput(exec.Command("sh", "-c", script))
	if err != nil {
		return fmt.Errorf("%s: %v: %s", script, err, out)
	}
	return nil
}

// benchVolumeCleanup removes what the benchmark stored: its volumes, and the blobs and cached
// versions it made in the shared layer directory (never a blob that was there before it).
type benchVolumeCleanup struct {
	blobs    *volume.Blobs
	volumes  []string
	remove   []string // blob sums the benchmark made
	versions []string
}

func (cl *benchVolumeCleanup) volume(c *benchClient, name string) (string, error) {
	var v struct {
		ID string `json:"volume_id"`
	}
	err := c.json("POST", "/v1/volumes", map[string]any{"name": name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)}, &v)
	if err == nil {
		cl.volumes = append(cl.volumes, v.ID)
	}
	return v.ID, err
}

// expect notes a blob the benchmark is about to make, unless it is stored already.
func (cl *benchVolumeCleanup) expect(content []byte) {
	s := sha256.Sum256(content)
	sum := hex.EncodeToString(s[:])
	if _, err := cl.blobs.Stat(sum); err != nil {
		cl.remove = append(cl.remove, sum)
	}
}

// expectFiles notes the blobs of the files in dir.
func (cl *benchVolumeCleanup) expectFiles(dir string) error {
	es, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range es {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		sum := hex.EncodeToString(h.Sum(nil))
		if _, err := cl.blobs.Stat(sum); err != nil {
			cl.remove = append(cl.remove, sum)
		}
	}
	return nil
}

// version notes a volume's current version (its manifest and cached copy) and returns it.
func (cl *benchVolumeCleanup) version(c *benchClient, vid string) string {
	var v struct {
		Head string `json:"version_id"`
	}
	if err := c.json("GET", "/v1/volumes/"+vid, nil, &v); err == nil && v.Head != "" {
		cl.versions = append(cl.versions, v.Head)
	}
	return v.Head
}

func (cl *benchVolumeCleanup) run(c *benchClient) {
	for _, id := range cl.volumes {
		if err := c.json("DELETE", "/v1/volumes/"+id, nil, nil); err != nil {
			benchWarn("deleting volume %s: %v", id, err)
		}
	}
	cache := filepath.Join(filepath.Dir(cl.blobs.Dir), "cache")
	for _, v := range cl.versions {
		cl.remove = append(cl.remove, v)
		if err := os.RemoveAll(filepath.Join(cache, v)); err != nil {
			benchWarn("%v", err)
		}
	}
	for _, s := range cl.remove {
		if err := os.Remove(cl.blobs.Path(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
			benchWarn("%v", err)
		}
	}
}
