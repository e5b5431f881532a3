package main

import (
	"fmt"
	"image/color"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	gust "github.com/gust-run/gust/sdk/go"
)

// plotAdvice draws the advisor's concurrency over time, one step line per group (the dearest
// few), with each group's recommended reserved floor as a dashed line, to a PNG (or SVG, PDF,
// by the file's extension).
func plotAdvice(path string, adv []*gust.Advice, since time.Time) error {
	p := plot.New()
	p.Title.Text = "Containers running at once, and the recommended reserved floor"
	p.X.Label.Text = "seconds since " + since.UTC().Format(time.RFC3339)
	p.Y.Label.Text = "containers"
	palette := []color.Color{
		color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 255, G: 127, B: 14, A: 255}, color.RGBA{R: 44, G: 160, B: 44, A: 255},
		color.RGBA{R: 214, G: 39, B: 40, A: 255}, color.RGBA{R: 148, G: 103, B: 189, A: 255}, color.RGBA{R: 140, G: 86, B: 75, A: 255},
	}
	for i, a := range adv {
		if i == len(palette) {
			break
		}
		if len(a.Timeline) == 0 {
			continue
		}
		pts := make(plotter.XYs, 0, 2*len(a.Timeline)+1)
		for j, s := range a.Timeline {
			x := s.At.Sub(since).Seconds()
			if j > 0 { // a step: the last level until this change
				pts = append(pts, plotter.XY{X: x, Y: pts[len(pts)-1].Y})
			}
			pts = append(pts, plotter.XY{X: x, Y: float64(s.Containers)})
		}
		pts = append(pts, plotter.XY{X: a.WindowSeconds, Y: pts[len(pts)-1].Y})
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = palette[i]
		line.Width = vg.Points(1.5)
		floor, err := plotter.NewLine(plotter.XYs{{X: 0, Y: float64(a.Floor)}, {X: a.WindowSeconds, Y: float64(a.Floor)}})
		if err != nil {
			return err
		}
		floor.Color = palette[i]
		floor.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
		p.Add(line, floor)
		p.Legend.Add(fmt.Sprintf("%s %s (%s): %s", a.Kind, a.Name, a.ResourceClass, a.Recommendation), line)
		p.Legend.Add(fmt.Sprintf("floor %d", a.Floor), floor)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Y.Min = 0
	for _, a := range adv {
		p.Y.Max = max(p.Y.Max, float64(a.Concurrency.Peak)+1, float64(a.Floor)+1) // room for the legend
	}
	p.Add(plotter.NewGrid())
	return p.Save(10*vg.Inch, 5*vg.Inch, path)
}
