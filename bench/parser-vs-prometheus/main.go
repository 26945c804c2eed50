// Command parser-vs-prometheus measures Prometheus' own exposition parser (model/textparse, the
// parser of its scrape loop) on a body file, so that metricshard's parser can be compared with it
// on the same input and machine. See run.sh beside it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

func main() {
	bodyPath := flag.String("body", "", "exposition body to parse")
	format := flag.String("format", "text", "text (0.0.4) or openmetrics")
	flag.Parse()
	body, err := os.ReadFile(*bodyPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	newParser := func() textparse.Parser {
		if *format == "openmetrics" {
			return textparse.NewOpenMetricsParser(body, labels.NewSymbolTable())
		}
		return textparse.NewPromParser(body, labels.NewSymbolTable(), false)
	}
	samples, err := parse(newParser(), true)
	if err != nil {
		fmt.Fprintln(os.Stderr, "body does not parse:", err)
		os.Exit(1)
	}
	// "labels": every sample's label set is built, as metricshard's parser does for every sample.
	// "series": only the raw series bytes and value, what Prometheus' scrape loop needs for a series
	// already in its cache.
	for _, mode := range []struct {
		name       string
		withLabels bool
	}{{"labels", true}, {"series", false}} {
		result := testing.Benchmark(func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := parse(newParser(), mode.withLabels); err != nil {
					b.Fatal(err)
				}
			}
		})
		perBody := float64(result.NsPerOp())
		fmt.Printf("prometheus-textparse format=%s mode=%s samples=%d ns_per_body=%.0f samples_per_s=%.0f\n",
			*format, mode.name, samples, perBody, float64(samples)/perBody*1e9)
	}
}

// parse walks the whole body and returns the number of samples.
func parse(p textparse.Parser, withLabels bool) (int, error) {
	var lset labels.Labels
	samples := 0
	for {
		entry, err := p.Next()
		if errors.Is(err, io.EOF) {
			return samples, nil
		}
		if err != nil {
			return samples, err
		}
		if entry != textparse.EntrySeries {
			continue
		}
		p.Series()
		if withLabels {
			p.Labels(&lset)
		}
		samples++
	}
}
